//! The edges Grafana's service map draws for a set of spans, computed with the rules of
//! Tempo's metrics generator (3.x, `modules/generator/processor/servicegraphs`), so the
//! native tests prove what the map will show and the compose tests compare it with
//! `traces_service_graph_request_total` in Prometheus.
//!
//! The rules:
//! - a CLIENT or PRODUCER span is the client side of an edge keyed by its own span id;
//!   a SERVER or CONSUMER span is the server side keyed by its parent's span id; a pair
//!   with a PRODUCER or CONSUMER is `messaging_system`;
//! - a client span carrying a database-name attribute ([`DATABASE_NAME_ATTRIBUTES`], as
//!   configured in `tempo/tempo.yaml`) is a `database` edge on its own, the server named
//!   by `peer.service`, else `server.address`, else the database name;
//! - a SERVER or CONSUMER root span is an edge from the virtual node `user`;
//! - INTERNAL spans make no edge;
//! - Tempo keeps one edge per key: when two server-side spans share a parent, one of the
//!   two edges is lost (which one depends on arrival order). [`ServiceGraph::conflicts`]
//!   lists such parents, so a test fails before the map silently drops an edge.
//!
//! Not modelled: virtual nodes from `peer.service` on client spans that never find a
//! server (the services set no `peer.service`).

use std::collections::{BTreeMap, HashMap};

use crate::model::{AttributesExt as _, SpanKind, SpanRecord};

/// The database-name attributes of `tempo/tempo.yaml`
/// (`metrics_generator.processor.service_graphs.database_name_attributes`), in order.
pub const DATABASE_NAME_ATTRIBUTES: [&str; 2] = ["db.namespace", "db.name"];

/// The `connection_type` label of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConnectionType {
    /// CLIENT -> SERVER (label value empty).
    Direct,
    /// PRODUCER -> CONSUMER.
    MessagingSystem,
    /// A client span naming a database.
    Database,
    /// From `user` to a root SERVER or CONSUMER span.
    VirtualNode,
}

impl ConnectionType {
    /// The value of the `connection_type` label in Prometheus.
    pub fn label(self) -> &'static str {
        match self {
            Self::Direct => "",
            Self::MessagingSystem => "messaging_system",
            Self::Database => "database",
            Self::VirtualNode => "virtual_node",
        }
    }
}

/// One edge of the service map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    /// The `client` label: the calling service.
    pub client: String,
    /// The `server` label: the called service or database.
    pub server: String,
    /// The `connection_type` label.
    pub connection_type: ConnectionType,
}

impl Edge {
    /// An edge from `client` to `server`.
    pub fn new(client: &str, server: &str, connection_type: ConnectionType) -> Self {
        Self { client: client.to_owned(), server: server.to_owned(), connection_type }
    }
}

/// The edges of a set of spans, with how many requests each counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServiceGraph {
    /// Edges and their request counts.
    pub edges: BTreeMap<Edge, usize>,
    /// Client spans with more than one server-side child: Tempo would lose edges there.
    pub conflicts: Vec<String>,
}

impl ServiceGraph {
    /// The edges Tempo derives from `spans`.
    pub fn of(spans: &[SpanRecord]) -> Self {
        let mut server_sides: HashMap<(&str, &str), Vec<&SpanRecord>> = HashMap::new();
        let mut graph = Self::default();
        for span in spans.iter().filter(|s| is_server_side(s.kind)) {
            match span.parent_span_id.as_deref() {
                Some(parent) => server_sides.entry((&span.trace_id, parent)).or_default().push(span),
                None => graph.add(Edge::new("user", &span.service_name, ConnectionType::VirtualNode)),
            }
        }
        for client in spans.iter().filter(|s| matches!(s.kind, SpanKind::Client | SpanKind::Producer)) {
            if let Some(database) = database_server(client) {
                graph.add(Edge::new(&client.service_name, &database, ConnectionType::Database));
                continue;
            }
            match server_sides.get(&(client.trace_id.as_str(), client.span_id.as_str())).map(Vec::as_slice) {
                Some([server]) => {
                    let messaging = client.kind == SpanKind::Producer || server.kind == SpanKind::Consumer;
                    let kind = if messaging { ConnectionType::MessagingSystem } else { ConnectionType::Direct };
                    graph.add(Edge::new(&client.service_name, &server.service_name, kind));
                }
                Some(servers) => graph.conflicts.push(format!(
                    "{:?} ({}) has {} server-side children: {:?}",
                    client.name,
                    client.service_name,
                    servers.len(),
                    servers.iter().map(|s| format!("{} ({})", s.name, s.service_name)).collect::<Vec<_>>()
                )),
                None => {}
            }
        }
        graph
    }

    /// Whether any edge goes into or out of `service`.
    pub fn touches(&self, service: &str) -> bool {
        self.edges.keys().any(|e| e.client == service || e.server == service)
    }

    fn add(&mut self, edge: Edge) {
        *self.edges.entry(edge).or_default() += 1;
    }
}

fn is_server_side(kind: SpanKind) -> bool {
    matches!(kind, SpanKind::Server | SpanKind::Consumer)
}

/// The server name of a database edge, if `span` names a database.
fn database_server(span: &SpanRecord) -> Option<String> {
    let database = DATABASE_NAME_ATTRIBUTES.iter().find_map(|key| span.attributes.str(key))?;
    let server = ["peer.service", "server.address"].iter().find_map(|key| span.attributes.str(key));
    Some(server.unwrap_or(database).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttrValue, Attributes, StatusCode};

    fn span(service: &str, id: &str, parent: Option<&str>, kind: SpanKind) -> SpanRecord {
        SpanRecord {
            service_name: service.to_owned(),
            trace_id: "0af7651916cd43dd8448eb211c80319c".to_owned(),
            span_id: id.to_owned(),
            parent_span_id: parent.map(str::to_owned),
            name: format!("{service} {id}"),
            kind,
            status: StatusCode::Unset,
            status_message: String::new(),
            attributes: Attributes::new(),
            events: Vec::new(),
            links: Vec::new(),
            start_unix_nano: 0,
            end_unix_nano: 1,
        }
    }

    fn message_journey(hop_kind: SpanKind) -> Vec<SpanRecord> {
        let mut insert = span("persist-worker", "c3", Some("c2"), SpanKind::Client);
        insert.attributes.insert("db.namespace".into(), AttrValue::Str("chat".into()));
        insert.attributes.insert("server.address".into(), AttrValue::Str("postgres".into()));
        vec![
            span("chat-cli", "c1", None, SpanKind::Producer),
            span("nats-server", "b1", Some("c1"), hop_kind),
            span("persist-worker", "c2", Some("c1"), SpanKind::Consumer),
            insert,
            span("persist-worker", "c4", Some("c2"), SpanKind::Client),
        ]
    }

    #[test]
    fn an_internal_nats_hop_keeps_the_consumer_edge_and_the_database_edge() {
        let graph = ServiceGraph::of(&message_journey(SpanKind::Internal));
        let edges: Vec<_> = graph.edges.keys().cloned().collect();
        assert_eq!(
            edges,
            [
                Edge::new("chat-cli", "persist-worker", ConnectionType::MessagingSystem),
                Edge::new("persist-worker", "postgres", ConnectionType::Database),
            ]
        );
        assert!(graph.conflicts.is_empty(), "{:?}", graph.conflicts);
        assert!(!graph.touches("nats-server"));
    }

    #[test]
    fn a_consumer_nats_hop_would_compete_with_the_worker_for_the_producer_edge() {
        let graph = ServiceGraph::of(&message_journey(SpanKind::Consumer));
        assert_eq!(graph.conflicts.len(), 1, "{graph:?}");
        assert!(graph.conflicts[0].contains("nats-server") && graph.conflicts[0].contains("persist-worker"));
    }

    #[test]
    fn root_servers_hang_off_user_and_client_server_pairs_are_direct() {
        let spans = vec![
            span("auth-service", "a1", None, SpanKind::Server),
            span("chat-cli", "r1", None, SpanKind::Client),
            span("history-service", "r2", Some("r1"), SpanKind::Server),
        ];
        let graph = ServiceGraph::of(&spans);
        assert_eq!(graph.edges.get(&Edge::new("user", "auth-service", ConnectionType::VirtualNode)), Some(&1));
        assert_eq!(graph.edges.get(&Edge::new("chat-cli", "history-service", ConnectionType::Direct)), Some(&1));
        assert_eq!(graph.edges.len(), 2);
    }
}
