//! WebSocket (RFC 6455): see handshake, frame, mask.
