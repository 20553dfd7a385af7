//! The codec of every generated service and client: prost's, except that a
//! message whose bytes do not decode is `InvalidArgument` (the sender's
//! fault), where tonic says `Internal`. A client sending garbage must not
//! look like a server fault to the error-rate alerts.

use tonic::{
    Status,
    codec::{BufferSettings, DecodeBuf},
};
use tonic_prost::ProstCodec;

/// See the module documentation.
#[derive(Debug)]
pub struct Codec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as tonic::codec::Codec>::Encoder;
    type Decoder = Decoder<<ProstCodec<T, U> as tonic::codec::Codec>::Decoder>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder(self.0.decoder())
    }
}

/// prost's decoder with its decode errors made `InvalidArgument`.
#[derive(Debug)]
pub struct Decoder<D>(D);

impl<D> tonic::codec::Decoder for Decoder<D>
where
    D: tonic::codec::Decoder<Error = Status>,
{
    type Item = D::Item;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        self.0.decode(src).map_err(|status| {
            if status.code() == tonic::Code::Internal {
                Status::invalid_argument(format!(
                    "the message does not decode: {}",
                    status.message()
                ))
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
