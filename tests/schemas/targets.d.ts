// Query (target) shapes of the three datasources the dashboards use. @grafana/schema
// publishes only the common part (`DataQuery`); each datasource's own fields are
// generated into Grafana's repository, not into a package. The field names below are
// those of Grafana 13.2's generated types:
//   Prometheus: packages/grafana-prometheus/src/dataquery.ts (`Prometheus`)
//   Loki:       public/app/plugins/datasource/loki/dataquery.gen.ts (`Loki`, plus `direction`)
//   Tempo:      public/app/plugins/datasource/tempo/dataquery.gen.ts (`TempoQuery`), plus
//               `tableType`, which the Tempo query editor stores for TraceQL table results.
import type { DataQuery } from "./node_modules/@grafana/schema/dist/types/common/common.gen";
import type { DataSourceRef } from "./node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen";

interface Target extends Omit<DataQuery, "datasource"> {
  datasource: DataSourceRef;
}

export interface PrometheusTarget extends Target {
  editorMode?: "builder" | "code";
  exemplar?: boolean;
  expr: string;
  format?: "time_series" | "table" | "heatmap";
  instant?: boolean;
  interval?: string;
  intervalFactor?: number;
  legendFormat?: string;
  range?: boolean;
}

export interface LokiTarget extends Target {
  direction?: "forward" | "backward" | "scan";
  editorMode?: "builder" | "code";
  expr: string;
  instant?: boolean;
  legendFormat?: string;
  maxLines?: number;
  queryType?: "instant" | "range" | "stream";
  range?: boolean;
  resolution?: number;
}

interface TraceqlFilter {
  id: string;
  operator?: string;
  scope?: "intrinsic" | "resource" | "span" | "unscoped";
  tag?: string;
  value?: string | string[];
  valueType?: string;
}

export interface TempoTarget extends Target {
  filters?: TraceqlFilter[];
  groupBy?: TraceqlFilter[];
  limit?: number;
  query?: string;
  queryType?: "traceql" | "traceqlSearch" | "search" | "serviceMap" | "upload" | "nativeSearch" | "traceId" | "clear";
  serviceMapIncludeNamespace?: boolean;
  serviceMapQuery?: string;
  spss?: number;
  tableType?: "traces" | "spans" | "raw";
}
