//! The gRPC codec of every Weir service: prost's, except that bytes that do not decode as the
//! expected message are the sender's mistake, answered `INVALID_ARGUMENT` with reason
//! `INVALID_REQUEST` (prost's codec answers `INTERNAL`, as if the broker had failed).

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::Reason;

/// prost's codec with decoding failures told as the request's.
#[derive(Debug, Clone)]
pub struct WeirCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for WeirCodec<T, U> {
    fn default() -> Self {
        WeirCodec {
            _messages: PhantomData,
        }
    }
}

impl<T, U> Codec for WeirCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = WeirDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        WeirDecoder(ProstDecoder::default())
    }
}

/// prost's decoder, its errors answered `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct WeirDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for WeirDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            Reason::InvalidRequest.status(format!(
                "the message is not a valid {}: {}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("message"),
                status.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
