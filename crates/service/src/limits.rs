//! Message size limits and compression for every gRPC server and client in
//! the project, from the one `grpc` config section, so no component sends
//! what another refuses.

use gauntlet_config::GrpcConfig;
pub use tonic::codec::CompressionEncoding;

/// What [`limited!`](crate::limited) applies to a generated server or client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Largest message sent or accepted, in bytes.
    pub max_bytes: usize,
    /// Whether to compress what this side sends with gzip. Servers always
    /// accept gzip and only compress for clients that ask for it.
    pub gzip: bool,
}

impl MessageLimits {
    pub fn new(config: &GrpcConfig) -> Self {
        Self {
            max_bytes: config.max_message_bytes,
            gzip: config.gzip,
        }
    }

    /// Room left for the payload of a message once framing and the other
    /// fields are counted: a page or chunk is filled up to this.
    pub fn payload_budget(&self) -> usize {
        // Field tags, lengths and a page token are a few dozen bytes; keep a
        // generous margin so a page never ends up a few bytes over.
        self.max_bytes
            .saturating_sub(16 * 1024)
            .max(self.max_bytes / 2)
    }
}

impl Default for MessageLimits {
    fn default() -> Self {
        Self::new(&GrpcConfig::default())
    }
}

/// Answers below this many encoded bytes go out uncompressed even to a
/// client that accepts gzip: deflating a run's few hundred bytes costs the
/// server more CPU than it saves on the wire (7 % of the gateway's CPU
/// under a read load of small answers, in a profile).
pub const GZIP_FROM_BYTES: usize = 1024;

/// A unary answer, compressed only if it is large enough to gain from it
/// ([`GZIP_FROM_BYTES`]).
pub fn answer<M: prost::Message>(message: M) -> tonic::Response<M> {
    let small = message.encoded_len() < GZIP_FROM_BYTES;
    let mut response = tonic::Response::new(message);
    if small {
        response
            .extensions_mut()
            .insert(tonic::codec::SingleMessageCompressionOverride::Disable);
    }
    response
}

/// Applies [`MessageLimits`] to a tonic-generated server or client:
/// `limited!(RunServiceServer::new(api), limits)`. Generated types share
/// these builder methods by name but no trait, hence a macro.
#[macro_export]
macro_rules! limited {
    ($service:expr, $limits:expr) => {{
        let limits: $crate::limits::MessageLimits = $limits;
        let service = $service
            .max_decoding_message_size(limits.max_bytes)
            .max_encoding_message_size(limits.max_bytes)
            .accept_compressed($crate::limits::CompressionEncoding::Gzip);
        if limits.gzip {
            service.send_compressed($crate::limits::CompressionEncoding::Gzip)
        } else {
            service
        }
    }};
}

#[cfg(test)]
mod tests {
    use tonic::codec::SingleMessageCompressionOverride as Override;

    use super::*;

    #[test]
    fn only_answers_worth_deflating_are_compressed() {
        let small = answer(gauntlet_proto::v1::Run {
            description: "x".repeat(GZIP_FROM_BYTES - 100),
            ..Default::default()
        });
        assert_eq!(
            small.extensions().get::<Override>(),
            Some(&Override::Disable)
        );
        let large = answer(gauntlet_proto::v1::Run {
            description: "x".repeat(GZIP_FROM_BYTES),
            ..Default::default()
        });
        assert_eq!(large.extensions().get::<Override>(), None);
    }
}
