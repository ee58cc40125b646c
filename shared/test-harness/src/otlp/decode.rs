//! OTLP protobuf messages -> [`crate::model`] types.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status};

use crate::model::{
    AttrValue, Attributes, LogRecord, MetricPoint, MetricRecord, MetricValue, SpanEvent, SpanKind, SpanLink,
    SpanRecord, StatusCode,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `None` for an absent or all-zero id.
fn id(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty() && bytes.iter().any(|b| *b != 0)).then(|| hex(bytes))
}

fn value(v: Option<&AnyValue>) -> AttrValue {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => AttrValue::Str(s.clone()),
        Some(any_value::Value::BoolValue(b)) => AttrValue::Bool(*b),
        Some(any_value::Value::IntValue(i)) => AttrValue::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => AttrValue::Double(*d),
        Some(other) => AttrValue::Other(format!("{other:?}")),
        None => AttrValue::Other(String::new()),
    }
}

pub(crate) fn attributes(kvs: &[KeyValue]) -> Attributes {
    kvs.iter().map(|kv| (kv.key.clone(), value(kv.value.as_ref()))).collect()
}

fn service_name(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .map(|kv| value(kv.value.as_ref()).to_text())
        .unwrap_or_default()
}

/// The attributes of every resource in a trace export.
pub(crate) fn resources(request: &ExportTraceServiceRequest) -> Vec<Attributes> {
    request.resource_spans.iter().filter_map(|rs| rs.resource.as_ref()).map(|r| attributes(&r.attributes)).collect()
}

pub(crate) fn spans(request: &ExportTraceServiceRequest) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let service = service_name(rs.resource.as_ref());
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                let status = s.status.as_ref();
                out.push(SpanRecord {
                    service_name: service.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: id(&s.parent_span_id),
                    name: s.name.clone(),
                    kind: match span::SpanKind::try_from(s.kind) {
                        Ok(span::SpanKind::Internal) => SpanKind::Internal,
                        Ok(span::SpanKind::Server) => SpanKind::Server,
                        Ok(span::SpanKind::Client) => SpanKind::Client,
                        Ok(span::SpanKind::Producer) => SpanKind::Producer,
                        Ok(span::SpanKind::Consumer) => SpanKind::Consumer,
                        _ => SpanKind::Unspecified,
                    },
                    status: match status.map(|st| status::StatusCode::try_from(st.code)) {
                        Some(Ok(status::StatusCode::Ok)) => StatusCode::Ok,
                        Some(Ok(status::StatusCode::Error)) => StatusCode::Error,
                        _ => StatusCode::Unset,
                    },
                    status_message: status.map(|st| st.message.clone()).unwrap_or_default(),
                    attributes: attributes(&s.attributes),
                    events: s
                        .events
                        .iter()
                        .map(|e| SpanEvent { name: e.name.clone(), attributes: attributes(&e.attributes) })
                        .collect(),
                    links: s
                        .links
                        .iter()
                        .map(|l| SpanLink { trace_id: hex(&l.trace_id), span_id: hex(&l.span_id) })
                        .collect(),
                    start_unix_nano: s.start_time_unix_nano,
                    end_unix_nano: s.end_time_unix_nano,
                });
            }
        }
    }
    out
}

pub(crate) fn logs(request: &ExportLogsServiceRequest) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for rl in &request.resource_logs {
        let service = service_name(rl.resource.as_ref());
        for sl in &rl.scope_logs {
            for l in &sl.log_records {
                out.push(LogRecord {
                    service_name: service.clone(),
                    trace_id: id(&l.trace_id),
                    span_id: id(&l.span_id),
                    severity_text: l.severity_text.clone(),
                    body: value(l.body.as_ref()).to_text(),
                    attributes: attributes(&l.attributes),
                });
            }
        }
    }
    out
}

fn number(v: Option<&number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => 0.0,
    }
}

pub(crate) fn metrics(request: &ExportMetricsServiceRequest) -> Vec<MetricRecord> {
    let mut out = Vec::new();
    for rm in &request.resource_metrics {
        let service = service_name(rm.resource.as_ref());
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let (monotonic, points) = match &m.data {
                    Some(metric::Data::Sum(sum)) => (
                        sum.is_monotonic,
                        sum.data_points
                            .iter()
                            .map(|p| MetricPoint {
                                attributes: attributes(&p.attributes),
                                value: MetricValue::Sum(number(p.value.as_ref())),
                            })
                            .collect(),
                    ),
                    Some(metric::Data::Gauge(gauge)) => (
                        false,
                        gauge
                            .data_points
                            .iter()
                            .map(|p| MetricPoint {
                                attributes: attributes(&p.attributes),
                                value: MetricValue::Gauge(number(p.value.as_ref())),
                            })
                            .collect(),
                    ),
                    Some(metric::Data::Histogram(h)) => (
                        false,
                        h.data_points
                            .iter()
                            .map(|p| MetricPoint {
                                attributes: attributes(&p.attributes),
                                value: MetricValue::Histogram { count: p.count, sum: p.sum.unwrap_or_default() },
                            })
                            .collect(),
                    ),
                    _ => (false, Vec::new()),
                };
                out.push(MetricRecord {
                    service_name: service.clone(),
                    name: m.name.clone(),
                    unit: m.unit.clone(),
                    monotonic,
                    points,
                });
            }
        }
    }
    out
}
