// Every user-visible string of the page, in English and Japanese, and the rules for choosing between them.
// Strings may contain {name} placeholders filled by t(key, params).

export const LANGUAGES = ["en", "ja"];
export const DEFAULT_LANGUAGE = "en";
const STORAGE_KEY = "relay.lang";

export const STRINGS = {
  en: {
    "history.title": "History",
    "history.refresh": "Refresh",
    "history.empty": "No saved conversations yet.",
    "history.noWords": "(nothing said)",
    "history.open": "Open",
    "history.continue": "Continue",
    "history.export": "Export",
    "history.delete": "Delete",
    "history.you": "You",
    "history.assistant": "Assistant",
    "history.tool": "Tool call",
    "history.toolOutput": "Tool result",
    "history.interrupted": "(interrupted after {ms} ms)",
    "app.title": "Realtime Relay",
    "app.tagline": "Talk with the voice model through your relay",
    "badge.simulated": "Simulated model",
    "badge.simulatedHint": "Replies come from the built-in simulated model, not from OpenAI.",
    "badge.providerHint": "The upstream this session talks to.",
    "provider.label": "Provider",
    "lang.label": "Language",
    "settings.open": "Settings",
    "settings.title": "Settings",
    "settings.voice": "Voice",
    "settings.instructions": "Instructions",
    "settings.instructionsHint": "Leave unchanged to use the relay's default instructions.",
    "settings.locked": "Set by the server; it can't be changed here.",
    "settings.transcription": "Show a transcript of what I say",
    "settings.capture": "Microphone processing",
    "settings.echoCancellation": "Echo cancellation",
    "settings.noiseSuppression": "Noise suppression",
    "settings.autoGainControl": "Automatic gain",
    "settings.captureHint": "Changing these restarts the microphone.",
    "settings.close": "Close settings",
    "auth.title": "Sign in",
    "auth.intro": "This relay is protected. Enter the access token you were given.",
    "auth.token": "Access token",
    "auth.submit": "Sign in",
    "auth.signingIn": "Signing in…",
    "auth.signOut": "Sign out",
    "status.label": "Status",
    "status.disconnected": "Disconnected",
    "status.connecting": "Connecting…",
    "status.connected": "Connected",
    "status.listening": "Listening",
    "status.speaking": "Speaking",
    "status.error": "Error",
    "turn.idle": "Speak when you are ready; pause briefly to end your turn.",
    "turn.idleTyping": "Type a message below to talk.",
    "turn.hearing": "Hearing you… pause when you are done.",
    "turn.thinking": "Thinking…",
    "btn.connect": "Connect",
    "btn.disconnect": "Disconnect",
    "btn.mic": "Microphone",
    "btn.micStateOn": "On",
    "btn.micStateOff": "Off",
    "btn.dismiss": "Dismiss",
    "meter.label": "Microphone level",
    "latency.label": "Reply latency",
    "latency.none": "no turn yet",
    "latency.value": "last {last} ms · median {median} ms · turns: {count}",
    "latency.hint": "From the end of your speech to the first sound of the reply.",
    "chat.title": "Conversation",
    "chat.empty": "Connect and start speaking. The conversation appears here.",
    "chat.you": "You",
    "chat.assistant": "Assistant",
    "chat.listeningPlaceholder": "…",
    "chat.voiceOnly": "(spoken; transcript off)",
    "chat.transcriptionFailed": "(transcript unavailable)",
    "chat.interrupted": "interrupted",
    "chat.tool": "Tool · {name}",
    "chat.tool.running": "looking it up…",
    "chat.tool.done": "done",
    "chat.tool.failed": "failed",
    "compose.label": "Type a message",
    "compose.placeholder": "Type a message",
    "compose.send": "Send",
    "err.title": "Something went wrong",
    "err.relay_upstream_unavailable":
      "The voice service can't be reached right now. Wait a moment, then connect again.",
    "err.relay_upstream_timeout": "The voice service did not answer in time. Connect again.",
    "err.relay_upstream_auth_failed":
      "The voice service refused the relay's API key. Ask the relay's operator to check the key.",
    "err.relay_upstream_rate_limited":
      "The voice service is limiting requests from this relay. Wait a minute, then connect again.",
    "err.relay_upstream_protocol_error":
      "The voice service sent something the relay could not understand. Connect again; if it keeps happening, tell the relay's operator.",
    "err.relay_policy_violation":
      "The relay refused a request from this page ({message}). Reload the page and try again.",
    "err.relay_limit_exceeded": "A usage limit was reached ({message}). Wait a little, then connect again.",
    "err.relay_bad_audio":
      "The relay could not use the microphone audio. Turn the microphone off and on again, or reload the page.",
    "err.relay_bad_event": "The relay rejected a message from this page ({message}). Reload the page.",
    "err.relay_internal_error":
      "The relay hit an internal error. Connect again; if it repeats, tell the relay's operator.",
    "err.relay_shutting_down": "The relay is restarting. Wait a few seconds, then connect again.",
    "err.session_expired": "The conversation reached its time limit. Connect again to start a new one.",
    "err.server": "The relay reported: {message}",
    "close.1001": "The session ended because the relay is restarting or the session expired. Connect again.",
    "close.1008":
      "The relay closed the connection because a limit or rule was exceeded. Wait a little, then connect again.",
    "close.1009": "A message was too large for the relay. Reload the page, then connect again.",
    "close.1011": "The relay failed unexpectedly. Connect again; if it repeats, tell the relay's operator.",
    "close.1013": "The relay is busy or restarting. Try again in a little while.",
    "close.unexpected": "The connection closed unexpectedly (code {code}). Connect again.",
    "connect.failed": "Could not connect to the relay. Check your network connection, then try again.",
    "connect.signedOut": "Your sign-in has expired. Sign in again to connect.",
    "connect.draining": "The relay is not taking new conversations right now (it is restarting). Try again shortly.",
    "connect.unreachable": "The relay can't be reached. Check that it is running and that you are online.",
    "login.invalid": "That access token is not valid. Check it and try again.",
    "login.empty": "Enter your access token.",
    "login.rateLimited": "Too many sign-in attempts. Wait {seconds} seconds, then try again.",
    "login.rateLimitedNoTime": "Too many sign-in attempts. Wait a while, then try again.",
    "login.forbidden":
      "The relay refuses sign-ins from this page's address. Open the page at the relay's own address.",
    "login.draining": "The relay is restarting and not accepting sign-ins. Try again in a moment.",
    "login.failed": "Sign-in failed (HTTP {status}). Try again.",
    "login.network": "Could not reach the relay. Check your connection, then try again.",
    "mic.denied":
      "Microphone access was blocked. Allow the microphone for this site in your browser's settings, then turn the microphone on.",
    "mic.notFound": "No microphone was found. Connect one, then turn the microphone on.",
    "mic.busy": "The microphone is in use by another application. Close it, then turn the microphone on.",
    "mic.insecure": "The browser only allows the microphone on secure (https) pages. Open the relay over https.",
    "mic.failed": "The microphone could not be started ({message}). Turn it on again.",
    "audio.unsupported":
      "This browser can't run the audio engine (AudioWorklet). Use a current Chrome, Edge, Firefox or Safari.",
    "audio.failed": "The audio engine could not start ({message}). Reload the page.",
    "audio.noOutput":
      "The browser could not start sound output. Check that speakers or headphones are connected and enabled, then connect again.",
    "config.failed": "Could not load the relay's settings. Reload the page.",
  },
  ja: {
    "history.title": "履歴",
    "history.refresh": "更新",
    "history.empty": "保存された会話はまだありません。",
    "history.noWords": "（発言なし）",
    "history.open": "開く",
    "history.continue": "続ける",
    "history.export": "書き出す",
    "history.delete": "削除",
    "history.you": "あなた",
    "history.assistant": "アシスタント",
    "history.tool": "ツール呼び出し",
    "history.toolOutput": "ツールの結果",
    "history.interrupted": "（{ms} ミリ秒で中断）",
    "app.title": "リアルタイム リレー",
    "app.tagline": "リレー経由で音声モデルと会話します",
    "badge.simulated": "シミュレーションモデル",
    "badge.simulatedHint": "応答は OpenAI ではなく、内蔵のシミュレーションモデルから返されます。",
    "badge.providerHint": "このセッションの接続先です。",
    "provider.label": "プロバイダー",
    "lang.label": "言語",
    "settings.open": "設定",
    "settings.title": "設定",
    "settings.voice": "声",
    "settings.instructions": "指示",
    "settings.instructionsHint": "変更しなければ、リレーの既定の指示が使われます。",
    "settings.locked": "サーバー側で固定されているため、ここでは変更できません。",
    "settings.transcription": "自分の発話を文字で表示する",
    "settings.capture": "マイクの音声処理",
    "settings.echoCancellation": "エコー除去",
    "settings.noiseSuppression": "ノイズ抑制",
    "settings.autoGainControl": "自動音量調整",
    "settings.captureHint": "変更するとマイクが再起動します。",
    "settings.close": "設定を閉じる",
    "auth.title": "サインイン",
    "auth.intro": "このリレーは保護されています。受け取ったアクセストークンを入力してください。",
    "auth.token": "アクセストークン",
    "auth.submit": "サインイン",
    "auth.signingIn": "サインイン中…",
    "auth.signOut": "サインアウト",
    "status.label": "状態",
    "status.disconnected": "未接続",
    "status.connecting": "接続中…",
    "status.connected": "接続済み",
    "status.listening": "聞き取り中",
    "status.speaking": "応答中",
    "status.error": "エラー",
    "turn.idle": "準備ができたら話してください。話し終えたら少し間を空けてください。",
    "turn.idleTyping": "下の欄にメッセージを入力して話せます。",
    "turn.hearing": "聞いています… 話し終えたら少し間を空けてください。",
    "turn.thinking": "考え中…",
    "btn.connect": "接続",
    "btn.disconnect": "切断",
    "btn.mic": "マイク",
    "btn.micStateOn": "オン",
    "btn.micStateOff": "オフ",
    "btn.dismiss": "閉じる",
    "meter.label": "マイクの音量",
    "latency.label": "応答遅延",
    "latency.none": "まだ会話がありません",
    "latency.value": "直近 {last} ms・中央値 {median} ms・{count} 回",
    "latency.hint": "発話の終わりから応答の最初の音が聞こえるまでの時間です。",
    "chat.title": "会話",
    "chat.empty": "接続して話しかけてください。会話はここに表示されます。",
    "chat.you": "あなた",
    "chat.assistant": "アシスタント",
    "chat.listeningPlaceholder": "…",
    "chat.voiceOnly": "（音声。文字起こしはオフです）",
    "chat.transcriptionFailed": "（文字起こしできませんでした）",
    "chat.interrupted": "中断",
    "chat.tool": "ツール · {name}",
    "chat.tool.running": "調べています…",
    "chat.tool.done": "完了",
    "chat.tool.failed": "失敗",
    "compose.label": "メッセージを入力",
    "compose.placeholder": "メッセージを入力",
    "compose.send": "送信",
    "err.title": "問題が発生しました",
    "err.relay_upstream_unavailable":
      "音声サービスに現在接続できません。しばらく待ってから、もう一度接続してください。",
    "err.relay_upstream_timeout": "音声サービスが時間内に応答しませんでした。もう一度接続してください。",
    "err.relay_upstream_auth_failed":
      "音声サービスがリレーの API キーを拒否しました。リレーの管理者にキーの確認を依頼してください。",
    "err.relay_upstream_rate_limited":
      "音声サービスがこのリレーからのリクエストを制限しています。1 分ほど待ってから、もう一度接続してください。",
    "err.relay_upstream_protocol_error":
      "音声サービスから解釈できないデータが届きました。もう一度接続してください。繰り返す場合はリレーの管理者に連絡してください。",
    "err.relay_policy_violation":
      "リレーがこのページからのリクエストを拒否しました（{message}）。ページを再読み込みして、やり直してください。",
    "err.relay_limit_exceeded": "利用上限に達しました（{message}）。少し待ってから、もう一度接続してください。",
    "err.relay_bad_audio":
      "リレーがマイクの音声を処理できませんでした。マイクをオフにしてから再度オンにするか、ページを再読み込みしてください。",
    "err.relay_bad_event":
      "リレーがこのページからのメッセージを拒否しました（{message}）。ページを再読み込みしてください。",
    "err.relay_internal_error":
      "リレーで内部エラーが発生しました。もう一度接続してください。繰り返す場合はリレーの管理者に連絡してください。",
    "err.relay_shutting_down": "リレーを再起動しています。数秒待ってから、もう一度接続してください。",
    "err.session_expired": "会話が制限時間に達しました。新しい会話を始めるには、もう一度接続してください。",
    "err.server": "リレーからのメッセージ: {message}",
    "close.1001": "リレーの再起動またはセッションの期限切れにより、会話が終了しました。もう一度接続してください。",
    "close.1008":
      "制限またはルールを超えたため、リレーが接続を閉じました。少し待ってから、もう一度接続してください。",
    "close.1009": "リレーに送るメッセージが大きすぎました。ページを再読み込みしてから接続してください。",
    "close.1011":
      "リレーで予期しない障害が発生しました。もう一度接続してください。繰り返す場合はリレーの管理者に連絡してください。",
    "close.1013": "リレーが混雑しているか再起動中です。しばらくしてから、もう一度お試しください。",
    "close.unexpected": "接続が予期せず切れました（コード {code}）。もう一度接続してください。",
    "connect.failed": "リレーに接続できませんでした。ネットワーク接続を確認して、もう一度お試しください。",
    "connect.signedOut": "サインインの有効期限が切れました。接続するには、もう一度サインインしてください。",
    "connect.draining": "リレーは再起動中のため、新しい会話を受け付けていません。しばらくしてからお試しください。",
    "connect.unreachable": "リレーに到達できません。リレーが動作していること、オンラインであることを確認してください。",
    "login.invalid": "アクセストークンが正しくありません。確認して、もう一度入力してください。",
    "login.empty": "アクセストークンを入力してください。",
    "login.rateLimited": "サインインの試行回数が多すぎます。{seconds} 秒待ってから、もう一度お試しください。",
    "login.rateLimitedNoTime": "サインインの試行回数が多すぎます。しばらく待ってから、もう一度お試しください。",
    "login.forbidden":
      "リレーはこのページのアドレスからのサインインを拒否しています。リレー自身のアドレスでページを開いてください。",
    "login.draining": "リレーは再起動中のため、サインインを受け付けていません。しばらくしてからお試しください。",
    "login.failed": "サインインに失敗しました（HTTP {status}）。もう一度お試しください。",
    "login.network": "リレーに接続できませんでした。接続を確認して、もう一度お試しください。",
    "mic.denied":
      "マイクの使用がブロックされました。ブラウザの設定でこのサイトのマイクを許可してから、マイクをオンにしてください。",
    "mic.notFound": "マイクが見つかりません。マイクを接続してから、マイクをオンにしてください。",
    "mic.busy": "マイクが他のアプリで使用中です。そのアプリを閉じてから、マイクをオンにしてください。",
    "mic.insecure":
      "ブラウザは安全な（https）ページでのみマイクを許可します。https でリレーを開いてください。",
    "mic.failed": "マイクを開始できませんでした（{message}）。もう一度オンにしてください。",
    "audio.unsupported":
      "このブラウザでは音声エンジン（AudioWorklet）を実行できません。最新の Chrome、Edge、Firefox、Safari をお使いください。",
    "audio.failed": "音声エンジンを開始できませんでした（{message}）。ページを再読み込みしてください。",
    "audio.noOutput":
      "ブラウザが音声出力を開始できませんでした。スピーカーまたはヘッドホンが接続され有効になっているか確認してから、もう一度接続してください。",
    "config.failed": "リレーの設定を読み込めませんでした。ページを再読み込みしてください。",
  },
};

/**
 * Choose the UI language: a valid stored choice wins, then the first of the browser's preferred languages that
 * the page speaks (matching on the primary subtag, so "ja-JP" means Japanese), then English.
 */
export function pickLanguage(preferred, stored) {
  if (LANGUAGES.includes(stored)) return stored;
  for (const tag of preferred ?? []) {
    const primary = String(tag).toLowerCase().split("-")[0];
    if (LANGUAGES.includes(primary)) return primary;
  }
  return DEFAULT_LANGUAGE;
}

/** Fill {name} placeholders of a template from params; unknown placeholders stay visible. */
export function format(template, params = {}) {
  return template.replace(/\{(\w+)\}/g, (whole, name) =>
    Object.hasOwn(params, name) ? String(params[name]) : whole,
  );
}

/** A translator bound to one language, falling back to English, then to the key itself. */
export function translator(lang) {
  const table = STRINGS[lang] ?? STRINGS[DEFAULT_LANGUAGE];
  return (key, params) => format(table[key] ?? STRINGS[DEFAULT_LANGUAGE][key] ?? key, params);
}

/** Read the remembered language choice; storage may be unavailable (private mode, sandboxed frames). */
export function loadStoredLanguage(storage) {
  try {
    return storage?.getItem(STORAGE_KEY) ?? null;
  } catch {
    return null;
  }
}

/** Remember the language choice; failing to store it only means it is not remembered. */
export function storeLanguage(storage, lang) {
  try {
    storage?.setItem(STORAGE_KEY, lang);
  } catch {
    /* not remembered */
  }
}

/**
 * Translate the static markup under root: `data-i18n="key"` sets the text, `data-i18n-attr="attr:key;attr:key"`
 * sets attributes (placeholder, aria-label, title).
 */
export function applyTranslations(root, t) {
  for (const el of root.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const el of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of el.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split(":").map((s) => s.trim());
      if (attr && key) el.setAttribute(attr, t(key));
    }
  }
}
