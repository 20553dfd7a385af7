//! Every gRPC method of the gateway, found from the descriptor set alone,
//! takes random bytes, truncated messages and oversized metadata: each
//! answer is a gRPC status (or a message), nothing panics, and the gateway
//! serves normally afterwards.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use bytes::{Buf, BufMut, Bytes};
use gauntlet_proto::v1;
use prost::Message as _;
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    metadata::MetadataValue,
};

use crate::cluster::Cluster;

/// Passes bytes through as the message, unchecked.
#[derive(Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Every method of the services in `packages`, as request paths.
fn methods(packages: &[&str]) -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(gauntlet_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for file in &set.file {
        let package = file.package();
        if !packages.contains(&package) {
            continue;
        }
        for service in &file.service {
            for method in &service.method {
                out.push(format!("/{package}.{}/{}", service.name(), method.name()));
            }
        }
    }
    out
}

/// xorshift64: reproducible noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Bytes {
        (0..n)
            .map(|_| self.next() as u8)
            .collect::<Vec<u8>>()
            .into()
    }
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// One call: a status (its code) or a first message (None) within 10 s.
async fn call(
    channel: &tonic::transport::Channel,
    path: &str,
    body: Bytes,
    metadata: Option<&str>,
) -> Result<Option<tonic::Code>, String> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| format!("not ready: {e}"))?;
    let mut request = tonic::Request::new(futures::stream::iter([body]));
    if let Some(value) = metadata {
        request
            .metadata_mut()
            .insert("x-fuzz", MetadataValue::try_from(value).unwrap());
    }
    let path = PathAndQuery::try_from(path).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        match grpc.streaming(request, path, Raw).await {
            // A status: a proper answer.
            Err(status) => Ok(Some(status.code())),
            Ok(response) => match response.into_inner().message().await {
                Ok(_) => Ok(None),
                Err(status) => Ok(Some(status.code())),
            },
        }
    })
    .await;
    answer.unwrap_or_else(|_| Err("no answer within 10 s".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_method_answers_random_truncated_and_oversized_input_with_a_status() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    let cluster = Cluster::start().await;
    let channel = cluster.channel().await;
    let paths = methods(&["gauntlet.v1", "gauntlet.internal.v1"]);
    assert!(paths.len() > 20, "{paths:?}");
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    // A real message, to cut short.
    let whole: Bytes = v1::SubmitRunRequest {
        suite: "prompts: ['{{ q }}']\nproviders: [echo]\ntests:\n  - vars: { q: hi }\n".into(),
        options: Some(v1::RunOptions {
            label: "fuzz".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
    .into();
    let big_metadata = "x".repeat(64 * 1024);
    let mut failures = Vec::new();
    let mut codes: std::collections::BTreeMap<String, usize> = Default::default();
    for path in &paths {
        let mut inputs: Vec<(String, Bytes, Option<&str>)> =
            vec![("empty".into(), Bytes::new(), None)];
        for n in [1, 7, 64, 512] {
            inputs.push((format!("{n} random bytes"), noise.bytes(n), None));
        }
        for _ in 0..3 {
            let cut = 1 + (noise.next() as usize) % (whole.len() - 1);
            inputs.push((format!("cut at {cut}"), whole.slice(..cut), None));
        }
        inputs.push((
            "64 KiB of metadata".into(),
            Bytes::new(),
            Some(big_metadata.as_str()),
        ));
        for (what, body, metadata) in inputs {
            match call(&channel, path, body, metadata).await {
                Ok(code) => {
                    if code == Some(tonic::Code::Unimplemented) && path.starts_with("/gauntlet.v1.")
                    {
                        failures.push(format!("{path}: not served"));
                    }
                    if matches!(code, Some(tonic::Code::Internal | tonic::Code::Unknown))
                        && metadata.is_none()
                    {
                        failures.push(format!("{path} with {what}: {code:?}, a server fault"));
                    }
                    *codes.entry(format!("{code:?}")).or_default() += 1;
                }
                Err(e) => failures.push(format!("{path} with {what}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}\n{codes:?}");
    // The bad input was read and refused, not waved through.
    assert!(
        codes.get("Some(InvalidArgument)").copied().unwrap_or(0) > paths.len(),
        "{codes:?}"
    );
    eprintln!("answers by code: {codes:?}");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a handler panicked");
    // Still serving, normally.
    let mut runs = cluster.runs().await;
    runs.list_runs(v1::ListRunsRequest::default())
        .await
        .expect("the gateway still answers");
    cluster.stop().await;
}
