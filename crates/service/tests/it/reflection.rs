//! Server reflection checked as a client that has only reflection would use
//! it (grpcurl, Postman, a fresh `grpcio` descriptor pool): every listed
//! service's methods must resolve, request and response and every type they
//! reach, from the files reflection serves, with no descriptor compiled in.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use gauntlet_config::GrpcConfig;
use gauntlet_service::GrpcServer;
use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorProto, field_descriptor_proto::Type};
use tokio_util::sync::CancellationToken;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

type Client = ServerReflectionClient<tonic::transport::Channel>;

async fn ask(client: &mut Client, request: MessageRequest) -> MessageResponse {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection call")
        .into_inner();
    answers
        .message()
        .await
        .expect("reflection answer")
        .expect("one answer")
        .message_response
        .expect("a response")
}

fn files_of(response: MessageResponse, asked: &str) -> Vec<FileDescriptorProto> {
    match response {
        MessageResponse::FileDescriptorResponse(files) => files
            .file_descriptor_proto
            .iter()
            .map(|bytes| FileDescriptorProto::decode(bytes.as_slice()).expect("a file descriptor"))
            .collect(),
        MessageResponse::ErrorResponse(e) => {
            panic!("reflection cannot serve {asked}: {}", e.error_message)
        }
        other => panic!("unexpected answer for {asked}: {other:?}"),
    }
}

/// Every message type a file declares, by full name (`.pkg.Outer.Inner`).
fn declared(
    prefix: &str,
    messages: &[DescriptorProto],
    out: &mut BTreeMap<String, DescriptorProto>,
) {
    for m in messages {
        let name = format!("{prefix}.{}", m.name());
        declared(&name, &m.nested_type, out);
        out.insert(name, m.clone());
    }
}

#[tokio::test]
async fn every_method_resolves_from_reflection_alone() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = GrpcServer::new("reflection-test", &GrpcConfig::default())
        .await
        .unwrap();
    let serving = tokio::spawn(server.serve(listener.into(), shutdown.clone()));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);

    let MessageResponse::ListServicesResponse(list) =
        ask(&mut client, MessageRequest::ListServices(String::new())).await
    else {
        panic!("list services did not answer with a list");
    };
    let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for public in [
        "gauntlet.v1.RunService",
        "gauntlet.v1.AnalyticsService",
        "gauntlet.v1.ReportService",
        "gauntlet.v1.MonitorService",
        "gauntlet.v1.AdminService",
    ] {
        assert!(
            services.iter().any(|s| s == public),
            "{public} not listed: {services:?}"
        );
    }

    // Fetch each service's file, then every file it imports, by name only.
    let mut files: BTreeMap<String, FileDescriptorProto> = BTreeMap::new();
    let mut wanted: VecDeque<String> = VecDeque::new();
    for service in &services {
        for file in files_of(
            ask(
                &mut client,
                MessageRequest::FileContainingSymbol(service.clone()),
            )
            .await,
            service,
        ) {
            wanted.extend(file.dependency.iter().cloned());
            files.insert(file.name().to_owned(), file);
        }
    }
    while let Some(name) = wanted.pop_front() {
        if files.contains_key(&name) {
            continue;
        }
        for file in files_of(
            ask(&mut client, MessageRequest::FileByFilename(name.clone())).await,
            &name,
        ) {
            wanted.extend(file.dependency.iter().cloned());
            files.insert(file.name().to_owned(), file);
        }
    }
    assert!(
        files.contains_key("google/protobuf/timestamp.proto"),
        "the well-known types a public file imports are served too: {:?}",
        files.keys().collect::<Vec<_>>()
    );

    let mut messages = BTreeMap::new();
    let mut enums = BTreeSet::new();
    for file in files.values() {
        let package = format!(".{}", file.package());
        declared(&package, &file.message_type, &mut messages);
        enums.extend(
            file.enum_type
                .iter()
                .map(|e| format!("{package}.{}", e.name())),
        );
        for m in &file.message_type {
            enums.extend(
                m.enum_type
                    .iter()
                    .map(|e| format!("{package}.{}.{}", m.name(), e.name())),
            );
        }
    }

    // Each method's types, and everything they reach, must resolve.
    let mut methods = 0;
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::new();
    for file in files.values() {
        for service in &file.service {
            for method in &service.method {
                methods += 1;
                queue.push_back((
                    format!("{}.{}", service.name(), method.name()),
                    method.input_type().to_owned(),
                ));
                queue.push_back((
                    format!("{}.{}", service.name(), method.name()),
                    method.output_type().to_owned(),
                ));
            }
        }
    }
    while let Some((from, type_name)) = queue.pop_front() {
        if !seen.insert(type_name.clone()) {
            continue;
        }
        let message = messages
            .get(&type_name)
            .unwrap_or_else(|| panic!("{from} needs {type_name}, which reflection does not serve"));
        for field in &message.field {
            match field.r#type() {
                Type::Message => queue.push_back((
                    format!("{type_name}.{}", field.name()),
                    field.type_name().to_owned(),
                )),
                Type::Enum => assert!(
                    enums.contains(field.type_name()),
                    "{type_name}.{} needs enum {}, which reflection does not serve",
                    field.name(),
                    field.type_name()
                ),
                _ => {}
            }
        }
    }
    assert!(methods >= 10, "only {methods} methods found");
    assert!(seen.contains(".google.protobuf.Timestamp"));

    shutdown.cancel();
    serving.await.unwrap().unwrap();
}
