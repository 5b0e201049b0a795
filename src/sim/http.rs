//! The HTTP/1.1 face of the sim: routes Kubernetes API paths to the state's operations,
//! applies fault rules, streams watches, and logs every request.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};

use super::Shared;
use super::api::PatchFormat;
use super::faults::{self, RequestTarget, Verb};
use super::kinds::{self, Kind};
use super::requests::RequestRecord;
use super::select::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Filter, ObjectKey, OpenWatch, WatchStart, watch_line};

pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// The watch timeout when the client names none.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// A parsed request path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Version,
    CoreVersions,
    Groups,
    Resources {
        group: String,
        version: String,
    },
    Object {
        kind: Kind,
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
    },
    Unknown,
}

fn route(path: &str) -> Route {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Route::Version,
        ["api"] => return Route::CoreVersions,
        ["apis"] => return Route::Groups,
        ["api", version] => return resources("", version),
        ["apis", group, version] => return resources(group, version),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Route::Unknown,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => (Some(*namespace), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] if namespace.is_some() => (*plural, Some(*name), None),
        [plural, name, sub] if namespace.is_some() => (*plural, Some(*name), Some(*sub)),
        _ => return Route::Unknown,
    };
    let Some(kind) = Kind::from_path(group, version, plural) else {
        return Route::Unknown;
    };
    if subresource.is_some_and(|s| !kind.subresources().contains(&s)) {
        return Route::Unknown;
    }
    Route::Object {
        kind,
        namespace: namespace.map(Into::into),
        name: name.map(Into::into),
        subresource: subresource.map(Into::into),
    }
}

fn resources(group: &str, version: &str) -> Route {
    Route::Resources {
        group: group.into(),
        version: version.into(),
    }
}

fn percent_decode(input: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters, decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Self {
        Self(
            query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "true"))
    }
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.to_status())
}

/// What the request asks for, once routed: the verb and resource, for faults and the log.
fn target_of(method: &Method, route: &Route, query: &Query) -> Option<RequestTarget> {
    let Route::Object {
        kind,
        namespace,
        name,
        subresource,
    } = route
    else {
        return None;
    };
    let verb = match (method, name.is_some()) {
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) if query.flag("watch") => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, _) => Verb::Create,
        (&Method::PUT, _) => Verb::Update,
        (&Method::PATCH, _) => Verb::Patch,
        (&Method::DELETE, _) => Verb::Delete,
        _ => return None,
    };
    let resource = match subresource {
        Some(sub) => format!("{}/{sub}", kind.plural()),
        None => kind.plural().to_owned(),
    };
    Some(RequestTarget {
        verb,
        resource,
        group: kind.group().to_owned(),
        namespace: namespace.clone(),
        name: name.clone(),
    })
}

fn accepts_json(accept: Option<&str>) -> bool {
    accept.is_none_or(|accept| {
        accept.split(',').any(|media| {
            let media = media.split(';').next().unwrap_or("").trim();
            matches!(media, "application/json" | "application/*" | "*/*" | "")
        })
    })
}

/// Serves one request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let received = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query_string = request.uri().query().unwrap_or("").to_owned();
    let query = Query::parse(&query_string);
    let route = route(&path);
    let target = target_of(&method, &route, &query);
    if let Some(target) = &target {
        faults::wait_while_held(&shared, target).await;
    }
    let latency = shared.faults().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let header_text = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header_text(header::CONTENT_TYPE);
    let user_agent = header_text(header::USER_AGENT);
    let accept = header_text(header::ACCEPT);

    let body = match http_body_util::Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
    };
    let response = if !accepts_json(accept.as_deref()) {
        error_response(&ApiError::new(
            406,
            "NotAcceptable",
            "only application/json is served",
        ))
    } else if let Some(fault) = target
        .as_ref()
        .and_then(|t| shared.faults().check(t, &shared.user))
    {
        error_response(&fault)
    } else {
        match body {
            Ok(body) => serve(
                &shared,
                &method,
                route,
                &query,
                content_type.as_deref(),
                user_agent.as_deref(),
                &body,
            ),
            Err(error) => error_response(&error),
        }
    };
    shared.record(RequestRecord {
        method: method.to_string(),
        verb: target.as_ref().map(|t| t.verb),
        resource: target.map(|t| t.resource),
        path,
        query: query_string,
        content_type,
        status: response.status().as_u16(),
        received,
        answered: Instant::now(),
    });
    Ok(response)
}

fn serve(
    shared: &Arc<Shared>,
    method: &Method,
    route: Route,
    query: &Query,
    content_type: Option<&str>,
    user_agent: Option<&str>,
    body: &[u8],
) -> Response<Body> {
    let not_found = || {
        error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ))
    };
    let discovery = |value: Option<Value>| match value {
        Some(value) if method == Method::GET => json_response(200, &value),
        Some(_) => error_response(&ApiError::new(
            405,
            "MethodNotAllowed",
            "discovery is read-only",
        )),
        None => not_found(),
    };
    match route {
        Route::Version => discovery(Some(kinds::version_info())),
        Route::CoreVersions => discovery(Some(kinds::core_api_versions(&shared.address))),
        Route::Groups => discovery(Some(kinds::api_group_list())),
        Route::Resources { group, version } => {
            discovery(kinds::api_resource_list(&group, &version))
        }
        Route::Unknown => not_found(),
        Route::Object {
            kind,
            namespace,
            name,
            subresource,
        } => {
            if method != Method::GET && query.get("dryRun").is_some() {
                return error_response(&ApiError::bad_request("dryRun is not simulated"));
            }
            let object = ObjectRoute {
                kind,
                namespace,
                name,
                subresource,
            };
            let parts = RequestParts {
                method,
                query,
                content_type,
                user_agent,
                body,
            };
            match serve_object(shared, object, &parts) {
                Ok(Served::Object(code, value)) => json_response(code, &value),
                Ok(Served::Watch(open, params)) => watch_response(shared.clone(), open, params),
                Ok(Served::WatchExpired(error)) => watch_error_response(&error),
                Err(error) => error_response(&error),
            }
        }
    }
}

enum Served {
    Object(u16, Value),
    Watch(OpenWatch, WatchParams),
    /// A watch from a compacted resourceVersion: HTTP 200 with one ERROR event, as the
    /// API server does (and as kube's watcher expects, to relist).
    WatchExpired(ApiError),
}

struct WatchParams {
    kind: Kind,
    timeout: Duration,
    bookmarks: bool,
}

fn selectors(kind: Kind, namespace: Option<String>, query: &Query) -> Result<Filter, ApiError> {
    Ok(Filter {
        kind,
        namespace,
        labels: LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?,
        fields: FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?,
    })
}

/// The routed object of a request.
struct ObjectRoute {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// The request parts an object operation reads.
struct RequestParts<'a> {
    method: &'a Method,
    query: &'a Query,
    content_type: Option<&'a str>,
    user_agent: Option<&'a str>,
    body: &'a [u8],
}

fn serve_object(
    shared: &Arc<Shared>,
    route: ObjectRoute,
    parts: &RequestParts<'_>,
) -> Result<Served, ApiError> {
    let RequestParts {
        method,
        query,
        content_type,
        user_agent,
        body,
    } = *parts;
    // The API server's rule: `fieldManager`, else the user agent up to its first '/'.
    let manager = query
        .get("fieldManager")
        .or_else(|| user_agent.and_then(|agent| agent.split('/').next()))
        .unwrap_or("unknown");
    let ObjectRoute {
        kind,
        namespace,
        name,
        subresource,
    } = route;
    let method_not_allowed = || {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported here"),
        )
    };
    let (Some(namespace), Some(name)) = (namespace.clone(), name) else {
        // Collection requests.
        return match *method {
            Method::GET if query.flag("watch") => {
                let filter = selectors(kind, namespace, query)?;
                let start = match query.get("resourceVersion").unwrap_or("") {
                    "" | "0" => WatchStart::CurrentState,
                    version => WatchStart::After(version.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {version:?}"))
                    })?),
                };
                let timeout = query
                    .get("timeoutSeconds")
                    .and_then(|s| s.parse().ok())
                    .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
                let params = WatchParams {
                    kind,
                    timeout,
                    bookmarks: query.flag("allowWatchBookmarks"),
                };
                match shared.with_state(|state| state.store.watch(filter, start)) {
                    Ok(open) => Ok(Served::Watch(open, params)),
                    Err(error) => Ok(Served::WatchExpired(error)),
                }
            }
            Method::GET => {
                let filter = selectors(kind, namespace, query)?;
                Ok(Served::Object(200, shared.state().api_list(&filter)))
            }
            Method::POST => {
                let namespace = namespace.ok_or_else(method_not_allowed)?;
                let created =
                    shared.with_state(|state| state.api_create(kind, &namespace, body))?;
                Ok(Served::Object(201, created))
            }
            _ => Err(method_not_allowed()),
        };
    };
    let key = ObjectKey::new(kind, &namespace, &name);
    let patch_format = || PatchFormat::from_content_type(content_type, kind);
    let served = match (subresource.as_deref(), method.clone()) {
        (None, Method::GET) => shared.state().api_get(&key)?,
        (None, Method::PUT) => shared.with_state(|state| state.api_replace(&key, body, manager))?,
        (None, Method::PATCH) => {
            let format = patch_format()?;
            shared.with_state(|state| state.api_patch(&key, format, body, manager))?
        }
        (None, Method::DELETE) => shared.with_state(|state| state.api_delete(&key, body))?,
        (Some("eviction"), Method::POST) => {
            let status = shared.with_state(|state| state.api_evict(&key, body))?;
            return Ok(Served::Object(201, status));
        }
        (Some("scale"), Method::GET) => shared.state().api_get_scale(&key)?,
        (Some("scale"), Method::PATCH) => {
            let format = patch_format()?;
            shared.with_state(|state| state.api_patch_scale(&key, format, body, manager))?
        }
        (Some("scale"), Method::PUT) => {
            shared.with_state(|state| state.api_replace_scale(&key, body, manager))?
        }
        _ => return Err(method_not_allowed()),
    };
    Ok(Served::Object(200, served))
}

fn streaming_response(
    stream: impl futures::Stream<Item = Bytes> + Send + 'static,
) -> Response<Body> {
    let body = StreamBody::new(stream.map(|line| Ok::<_, Infallible>(Frame::data(line))));
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.boxed_unsync())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

fn watch_error_response(error: &ApiError) -> Response<Body> {
    streaming_response(futures::stream::iter([watch_line(
        "ERROR",
        &error.to_status(),
    )]))
}

/// Where a watch stream is.
enum WatchPhase {
    Live(tokio::sync::mpsc::UnboundedReceiver<Bytes>),
    /// Timed out: send what is queued, then a bookmark if allowed.
    Closing(tokio::sync::mpsc::UnboundedReceiver<Bytes>),
    Done,
}

/// The chunked watch stream: initial events, then live ones until the timeout (closing
/// with a BOOKMARK at the current resourceVersion when allowed) or until the store drops
/// the watch (closing abruptly, as a restarting server would).
fn watch_response(shared: Arc<Shared>, open: OpenWatch, params: WatchParams) -> Response<Body> {
    let deadline = tokio::time::Instant::now() + params.timeout;
    let live = futures::stream::unfold(WatchPhase::Live(open.feed), move |phase| {
        let shared = shared.clone();
        let kind = params.kind;
        let bookmarks = params.bookmarks;
        async move {
            match phase {
                WatchPhase::Live(mut feed) => {
                    tokio::select! {
                        biased;
                        line = feed.recv() => line.map(|line| (line, WatchPhase::Live(feed))),
                        () = tokio::time::sleep_until(deadline) => closing(&shared, feed, kind, bookmarks),
                    }
                }
                WatchPhase::Closing(feed) => closing(&shared, feed, kind, bookmarks),
                WatchPhase::Done => None,
            }
        }
    });
    streaming_response(futures::stream::iter(open.initial).chain(live))
}

fn closing(
    shared: &Shared,
    mut feed: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
    kind: Kind,
    bookmarks: bool,
) -> Option<(Bytes, WatchPhase)> {
    // Under the state lock, so no change can slip between the queue and the bookmark.
    let state = shared.state();
    if let Ok(line) = feed.try_recv() {
        return Some((line, WatchPhase::Closing(feed)));
    }
    bookmarks.then(|| {
        let bookmark = json!({
            "kind": kind.kind(),
            "apiVersion": kind.api_version(),
            "metadata": {"resourceVersion": state.store.resource_version().to_string()},
        });
        (watch_line("BOOKMARK", &bookmark), WatchPhase::Done)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_namespaced_objects_subresources_and_discovery() {
        assert_eq!(
            route("/apis/flux-framework.org/v1alpha2/namespaces/default/miniclusters/m/scale"),
            Route::Object {
                kind: Kind::MiniCluster,
                namespace: Some("default".into()),
                name: Some("m".into()),
                subresource: Some("scale".into()),
            }
        );
        assert_eq!(
            route("/api/v1/pods"),
            Route::Object {
                kind: Kind::Pod,
                namespace: None,
                name: None,
                subresource: None
            }
        );
        assert_eq!(route("/apis/batch/v1"), resources("batch", "v1"));
        assert_eq!(
            route("/api/v1/namespaces/default/pods/p/exec"),
            Route::Unknown
        );
        assert_eq!(
            route("/apis/apps/v1/namespaces/default/deployments"),
            Route::Unknown
        );
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let query = Query::parse("labelSelector=batch.kubernetes.io%2Fjob-name%3Dflux&watch=1");
        assert_eq!(
            query.get("labelSelector"),
            Some("batch.kubernetes.io/job-name=flux")
        );
        assert!(query.flag("watch"));
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
