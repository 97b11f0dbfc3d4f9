//! (in progress) placeholder so dependants compile; replaced by the message codec.

/// A message as pulled from a broker (placeholder).
#[derive(Debug, Clone, Default)]
pub struct MessageExt {}
