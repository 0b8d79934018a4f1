// The WebSocket to the relay: GA client events as JSON text frames, microphone audio as binary PCM16LE frames.

// Audio older than this much queued in the socket is no use to a live conversation: drop frames rather than
// let memory and delay grow on a stalled network.
const MAX_BUFFERED_BYTES = 512 * 1024;

export class RelayConnection {
  /**
   * onEvent(event): a parsed server event. onClose({code, reason, opened, requestedByPage}): the socket closed
   * (or never opened).
   */
  constructor(url, { onEvent = () => {}, onClose = () => {} } = {}) {
    this.url = url;
    this.onEvent = onEvent;
    this.onClose = onClose;
    this.ws = null;
    this.opened = false;
    this.requestedByPage = false;
    this.stats = { sentFrames: 0, sentAudioBytes: 0, droppedFrames: 0, sentEvents: 0, receivedEvents: 0 };
  }

  /** Open the socket; resolves once open, rejects if it closes first (the relay refused the handshake). */
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onopen = () => {
        this.opened = true;
        resolve();
      };
      ws.onmessage = (message) => {
        if (typeof message.data !== "string") return;
        let event;
        try {
          event = JSON.parse(message.data);
        } catch {
          return;
        }
        this.stats.receivedEvents++;
        this.onEvent(event);
      };
      ws.onclose = (close) => {
        const info = {
          code: close.code,
          reason: close.reason,
          opened: this.opened,
          requestedByPage: this.requestedByPage,
        };
        if (!this.opened) reject(Object.assign(new Error("connection refused"), info));
        else this.onClose(info);
      };
    });
  }

  get isOpen() {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  /** Send a client event (JSON text frame). */
  sendEvent(event) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(event));
    this.stats.sentEvents++;
    return true;
  }

  /** Send one frame of PCM16LE microphone audio as a binary frame. */
  sendAudio(buffer) {
    if (!this.isOpen) return false;
    if (this.ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      this.stats.droppedFrames++;
      return false;
    }
    this.ws.send(buffer);
    this.stats.sentFrames++;
    this.stats.sentAudioBytes += buffer.byteLength;
    return true;
  }

  /** Close from the page's side (the user disconnected). */
  close() {
    this.requestedByPage = true;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "client closed");
  }
}
