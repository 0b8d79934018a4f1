"""WebSocket frames after the handshake: read where each starts and ends, forward it as it came, build only new ones.

`frames` is the sans-I/O part (scanning, validating and building frames); `link` applies it to one asyncio
transport; `dial` opens the upstream connection. Why forwarding frames verbatim is correct is in
docs/architecture.md ("The data path").
"""
