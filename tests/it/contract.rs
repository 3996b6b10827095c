//! The OpenAPI document is the contract: every documented operation is served, and the
//! answers the end-to-end tests get validate against their documented schemas (the
//! harness's request helpers call [`check`] on every answer).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::harness::{status_json, GraphStandIn, TestServer};

/// The document, as the server serves it.
fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::from_str(confab_gateway::openapi::document_json()).expect("document")
    })
}

/// The documented path template that `path` (no query) matches, if any.
fn template_of(path: &str) -> Option<String> {
    let paths = document()["paths"].as_object()?;
    let segments: Vec<&str> = path.split('/').collect();
    paths
        .keys()
        .find(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| (t.starts_with('{') && t.ends_with('}')) || t == s)
        })
        .cloned()
}

type Validators = Mutex<HashMap<(String, String, String), Option<jsonschema::Validator>>>;

/// Fails the test when the answer to `method path` is not documented, or its body does not
/// validate against the documented schema.
pub fn check(method: &str, path_and_query: &str, status: StatusCode, body: &Value) {
    let path = path_and_query.split('?').next().unwrap_or(path_and_query);
    let code = body["error"]["code"].as_str();
    // What the edge answers on any route (docs/API.md, "Errors"): checked for its shape.
    if EDGE_STATUSES.contains(&status.as_u16()) {
        assert!(code.is_some(), "{method} {path} {status}: {body}");
        return;
    }
    let operation = template_of(path).map(|template| {
        let op = document()["paths"][&template][method.to_ascii_lowercase()].clone();
        (template, op)
    });
    let (template, operation) = match operation {
        Some((template, op)) if op.is_object() => (template, op),
        _ => {
            // Not a documented operation: only "no such route" / "wrong method" may come.
            assert!(
                matches!(
                    (status.as_u16(), code),
                    (404, Some("no_route")) | (405, Some("method_not_allowed"))
                ),
                "{method} {path} is not in the OpenAPI document, yet answered {status}: {body}"
            );
            return;
        }
    };
    let method = method.to_ascii_lowercase();
    let code = status.as_u16().to_string();
    let response = &operation["responses"][&code];
    assert!(
        response.is_object(),
        "{method} {template} answered {code}, which the document does not list: {body}"
    );
    static VALIDATORS: OnceLock<Validators> = OnceLock::new();
    let validators = VALIDATORS.get_or_init(Default::default);
    let mut validators = validators.lock().unwrap_or_else(|p| p.into_inner());
    let validator = validators
        .entry((template.clone(), method.clone(), code.clone()))
        .or_insert_with(|| {
            let schema = response["content"]["application/json"]["schema"].clone();
            if schema.is_null() {
                return None;
            }
            Some(validator_for(&schema))
        });
    if let Some(validator) = validator {
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {code}: the answer does not match the document: {errors:?}\n{body}"
        );
    }
}

/// A validator of `schema`, whose local references (`#/components/…`) resolve against the
/// document.
fn validator_for(schema: &Value) -> jsonschema::Validator {
    let mut root = json!({"components": document()["components"].clone()});
    if let (Some(root), Some(schema)) = (root.as_object_mut(), schema.as_object()) {
        root.extend(schema.clone());
    }
    jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("bad schema {schema}: {e}"))
}

fn assert_valid(validator: &jsonschema::Validator, what: &str, value: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match the document: {errors:?}\n{value}"
    );
}

/// Fails the test when a frame the server sent does not match `StreamServerFrame`.
pub fn check_server_frame(frame: &Value) {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = VALIDATOR
        .get_or_init(|| validator_for(&json!({"$ref": "#/components/schemas/StreamServerFrame"})));
    assert_valid(validator, "a server frame", frame);
}

/// The client frames the API documents are the ones the server takes.
#[test]
fn the_documented_client_frames_validate() {
    let validator = validator_for(&json!({"$ref": "#/components/schemas/StreamClientFrame"}));
    for frame in [
        json!({"type": "subscribe", "since": 42}),
        json!({"type": "subscribe", "since": null}),
        json!({"type": "ping"}),
    ] {
        assert_valid(&validator, "a client frame", &frame);
    }
    for bad in [
        json!({"type": "unsubscribe"}),
        json!({"since": 1}),
        json!([1]),
    ] {
        assert!(!validator.is_valid(&bad), "{bad} should not validate");
    }
}

/// Statuses the edge may answer on any route, before a handler runs: request timeout, URI
/// or headers too large.
const EDGE_STATUSES: [u16; 3] = [408, 414, 431];

/// A value for a path parameter: a well-formed id that names nothing.
const UNKNOWN_ID: &str = "01JE7Q6W0Z3D8K4M2N5P7R9T1V";

/// Every operation of the document is routed: asked without credentials or with an
/// unknown id, it answers from its handler, never "no such route" or "wrong method".
#[tokio::test]
async fn every_documented_operation_is_served() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let paths = document()["paths"].as_object().expect("paths");
    let mut asked = 0;
    for (template, item) in paths {
        let path: String = template
            .split('/')
            .map(|part| {
                if part.starts_with('{') {
                    UNKNOWN_ID
                } else {
                    part
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().expect("path item").keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
                .expect("an HTTP method");
            let response = http
                .request(method.clone(), server.url(&path))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .expect("request");
            let status = response.status();
            let text = response.text().await.expect("body");
            let code = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
            assert!(
                !matches!(code.as_deref(), Some("no_route" | "method_not_allowed")),
                "{method} {template}: {status} {text}"
            );
            asked += 1;
        }
    }
    assert!(asked >= 20, "only {asked} operations documented");
    server.shutdown().await;
}

/// The document is served, and it is the one the code generates.
#[tokio::test]
async fn the_document_is_served_at_api_v1_openapi_json() {
    let server = TestServer::start().await;
    let graph = GraphStandIn::start().await;
    let tenant = server.provision(&graph).await;
    let response = reqwest::get(server.url("/api/v1/openapi.json"))
        .await
        .expect("request");
    let (status, doc) = status_json(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&doc, document());
    // A few answers of other tests' kinds, checked here too.
    let (status, body) = server.get(&tenant.token, "/api/v1/agents").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.get("not-a-token", "/api/v1/conversations").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    server.shutdown().await;
}
