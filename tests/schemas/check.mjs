// Checks JSON configs against the vendors' own published TypeScript types, with the
// TypeScript compiler's type checker (no hand-written schema):
//   node check.mjs keycloak <realm.json>...    @keycloak/keycloak-admin-client RealmRepresentation
//   node check.mjs dashboard <dashboard.json>... @grafana/schema Dashboard, each panel's
//                                               options/fieldConfig against its plugin's
//                                               types, each target against its datasource
// Every key must be a field of the type at that place, every value of that field's
// type; required fields must be there. A finding names the file and the JSON path:
//   keycloak/chat-realm.json: $._comment: unknown key (RealmRepresentation has no such field)
// Exit status: 0 clean, 1 findings, 2 usage or setup error.

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const here = dirname(fileURLToPath(import.meta.url));
const grafana = "./node_modules/@grafana/schema/dist/types";

// Panel plugin ids whose options Grafana publishes, by their folder in @grafana/schema
// (raw/composable/<folder>/panelcfg). The id is the plugin.json id in Grafana's source
// (public/app/plugins/panel/<id>/plugin.json) where it differs from the folder name.
const TYPED_PANELS = {
  annolist: "annotationslist", barchart: "barchart", bargauge: "bargauge", candlestick: "candlestick",
  canvas: "canvas", dashlist: "dashboardlist", debug: "debug", gauge: "gauge", geomap: "geomap",
  heatmap: "heatmap", histogram: "histogram", logs: "logs", news: "news", nodeGraph: "nodegraph",
  piechart: "piechart", stat: "stat", "state-timeline": "statetimeline", "status-history": "statushistory",
  table: "table", text: "text", timeseries: "timeseries", trend: "trend", xychart: "xychart",
};
// Core panel plugins with no published options schema (Grafana 13.2
// public/app/plugins/panel/<id>/plugin.json): their options are not type-checked.
const UNTYPED_PANELS = ["traces", "flamegraph", "alertlist", "datagrid"];
const TARGET_TYPES = { prometheus: "PrometheusTarget", loki: "LokiTarget", tempo: "TempoTarget" };

function program() {
  const panelImports = Object.entries(TYPED_PANELS).map(([id, folder], i) =>
    `import type * as P${i} from "${grafana}/raw/composable/${folder}/panelcfg/x/types.gen";\n` +
    `export type Options_${i} = P${i}.Options;\n` +
    (hasFieldConfig(folder) ? `export type FieldConfig_${i} = P${i}.FieldConfig;\n` : ""));
  const entry = [
    `import type Realm from "./node_modules/@keycloak/keycloak-admin-client/lib/defs/realmRepresentation";`,
    `export type KeycloakRealm = Realm;`,
    `import type { Dashboard } from "${grafana}/raw/dashboard/x/types.gen";`,
    `export type GrafanaDashboard = Dashboard;`,
    `export type { PrometheusTarget, LokiTarget, TempoTarget } from "./targets";`,
    ...panelImports,
  ].join("\n");
  const entryName = join(here, "__entry__.ts");
  const options = { strict: true, noEmit: true, skipLibCheck: true, target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler, types: [] };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, lang, ...rest) =>
    name === entryName ? ts.createSourceFile(name, entry, lang) : getSourceFile.call(host, name, lang, ...rest);
  host.fileExists = (name) => name === entryName || fileExists.call(host, name);
  host.readFile = (name) => (name === entryName ? entry : readFile.call(host, name));
  const prog = ts.createProgram([entryName], options, host);
  const problems = ts.getPreEmitDiagnostics(prog).map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n"));
  if (problems.length > 0) {
    throw new Error(`the vendor types did not load (run scripts/test-deps.sh):\n${problems.join("\n")}`);
  }
  const checker = prog.getTypeChecker();
  const exports = checker.getExportsOfModule(checker.getSymbolAtLocation(prog.getSourceFile(entryName)));
  const types = Object.fromEntries(exports.map((s) => [s.name, checker.getDeclaredTypeOfSymbol(s)]));
  return { checker, types };
}

function hasFieldConfig(folder) {
  const file = join(here, grafana, "raw/composable", folder, "panelcfg/x/types.gen.d.ts");
  return /export interface FieldConfig\b/.test(readFileSync(file, "utf8"));
}

// Walks a JSON value against a TypeScript type and collects findings.
class Walker {
  // `partial`: required fields may be missing (panel options and custom field config:
  // Grafana fills in each plugin's defaults for what a dashboard leaves out).
  constructor(checker, { partial = false } = {}) {
    this.checker = checker;
    this.partial = partial;
    this.findings = [];
  }

  name(type) {
    return this.checker.typeToString(type, undefined, ts.TypeFormatFlags.NoTruncation);
  }

  check(value, type, path) {
    const errors = this.errors(value, type, path);
    this.findings.push(...errors);
    return errors.length === 0;
  }

  errors(value, type, path) {
    const F = ts.TypeFlags;
    if (type.flags & (F.Any | F.Unknown)) return [];
    // `{}` in TypeScript is any value but null/undefined (the schema's open fields:
    // override values, matcher options, transformation options).
    if (this.isEmptyObject(type)) return value === null ? [`${path}: expected a value, found null`] : [];
    const members = type.isUnion() ? type.types : [type];
    const kind = value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
    const fits = members.filter((t) => this.kindOf(t).has(kind));
    if (fits.length === 0) {
      return [`${path}: expected ${this.name(type)}, found ${kind} ${short(value)}`];
    }
    if (kind === "array") {
      const element = fits.map((t) => this.elementType(t)).find(Boolean);
      if (!element) return [];
      return value.flatMap((v, i) => this.errors(v, element, `${path}[${i}]`));
    }
    if (kind === "object") {
      // A union of object types (Panel | RowPanel): the member that fits best.
      const tries = fits.map((t) => this.objectErrors(value, t, path));
      return tries.reduce((best, e) => (e.length < best.length ? e : best));
    }
    const literals = fits.filter((t) => t.isLiteral() || t.flags & F.BooleanLiteral);
    const open = fits.some((t) => !(t.isLiteral() || t.flags & F.BooleanLiteral));
    if (open || literals.some((t) => literalValue(t) === value)) return [];
    return [`${path}: ${JSON.stringify(value)} is not one of ${this.name(type)}`];
  }

  isEmptyObject(type) {
    return Boolean(type.flags & ts.TypeFlags.Object) &&
      !this.checker.isArrayType(type) && !this.checker.isTupleType(type) &&
      this.checker.getPropertiesOfType(type).length === 0 &&
      this.checker.getIndexInfosOfType(type).length === 0 &&
      type.getCallSignatures().length === 0;
  }

  kindOf(type) {
    if (this.isEmptyObject(type)) return new Set(["array", "object", "string", "number", "boolean"]);
    const F = ts.TypeFlags;
    const kinds = new Set();
    if (type.flags & (F.Any | F.Unknown)) return new Set(["null", "array", "object", "string", "number", "boolean"]);
    if (type.flags & (F.StringLike)) kinds.add("string");
    if (type.flags & (F.NumberLike)) kinds.add("number");
    if (type.flags & (F.BooleanLike)) kinds.add("boolean");
    if (type.flags & F.Null) kinds.add("null");
    if (type.flags & F.Object || type.flags & F.Intersection) {
      kinds.add(this.checker.isArrayType(type) || this.checker.isTupleType(type) ? "array" : "object");
    }
    return kinds;
  }

  elementType(type) {
    if (!(this.checker.isArrayType(type) || this.checker.isTupleType(type))) return undefined;
    return this.checker.getTypeArguments(type)[0];
  }

  objectErrors(value, type, path) {
    const errors = [];
    const index = this.checker.getIndexInfosOfType(type).find((i) => i.keyType.flags & ts.TypeFlags.String);
    for (const [key, v] of Object.entries(value)) {
      const prop = this.checker.getPropertyOfType(type, key);
      const at = `${path}.${/^[A-Za-z_$][\w$]*$/.test(key) ? key : JSON.stringify(key)}`;
      if (prop) {
        errors.push(...this.errors(v, this.checker.getNonNullableType(this.checker.getTypeOfSymbol(prop)), at)
          .filter(() => !(v === null && this.acceptsNull(prop))));
      } else if (index) {
        errors.push(...this.errors(v, index.type, at));
      } else {
        errors.push(`${at}: unknown key (${this.name(type)} has no such field)`);
      }
    }
    for (const prop of this.partial ? [] : this.checker.getPropertiesOfType(type)) {
      if (!(prop.flags & ts.SymbolFlags.Optional) && !(prop.name in value)) {
        errors.push(`${path}: missing required key ${JSON.stringify(prop.name)} of ${this.name(type)}`);
      }
    }
    return errors;
  }

  acceptsNull(prop) {
    const type = this.checker.getTypeOfSymbol(prop);
    return (type.isUnion() ? type.types : [type]).some((t) => t.flags & (ts.TypeFlags.Null | ts.TypeFlags.Any));
  }
}

function literalValue(type) {
  if (type.flags & ts.TypeFlags.BooleanLiteral) return type.intrinsicName === "true";
  return type.value;
}

function short(value) {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function checkDashboard(walker, types, dashboard) {
  walker.check(dashboard, types.GrafanaDashboard, "$");
  const options = new Walker(walker.checker, { partial: true });
  options.findings = walker.findings;
  const ids = Object.keys(TYPED_PANELS);
  (dashboard.panels ?? []).forEach((panel, i) => {
    const at = `$.panels[${i}]`;
    if (panel.type === "row") return;
    const typed = ids.indexOf(panel.type);
    if (typed < 0 && !UNTYPED_PANELS.includes(panel.type)) {
      walker.findings.push(`${at}.type: ${JSON.stringify(panel.type)} is not a Grafana 13.2 panel plugin id`);
    }
    if (typed >= 0 && panel.options !== undefined) {
      options.check(panel.options, types[`Options_${typed}`], `${at}.options`);
    }
    const custom = panel.fieldConfig?.defaults?.custom;
    if (typed >= 0 && custom !== undefined) {
      const fieldConfig = types[`FieldConfig_${typed}`];
      if (fieldConfig) options.check(custom, fieldConfig, `${at}.fieldConfig.defaults.custom`);
      else walker.findings.push(`${at}.fieldConfig.defaults.custom: panel ${panel.type} has no custom field config`);
    }
    (panel.targets ?? []).forEach((target, j) => {
      const kind = target?.datasource?.type ?? panel.datasource?.type;
      const name = TARGET_TYPES[kind];
      if (!name) {
        walker.findings.push(`${at}.targets[${j}].datasource.type: ${JSON.stringify(kind)} is not a datasource of this stack`);
        return;
      }
      walker.check(target, types[name], `${at}.targets[${j}]`);
    });
  });
}

function main(argv) {
  const [kind, ...files] = argv;
  if (!["keycloak", "dashboard"].includes(kind) || files.length === 0) {
    console.error("usage: node check.mjs keycloak|dashboard <file.json>...");
    return 2;
  }
  let loaded;
  try {
    loaded = program();
  } catch (error) {
    console.error(`schema check: ${error.message}`);
    return 2;
  }
  const { checker, types } = loaded;
  let findings = 0;
  for (const file of files) {
    const walker = new Walker(checker);
    const value = JSON.parse(readFileSync(file, "utf8"));
    if (kind === "keycloak") walker.check(value, types.KeycloakRealm, "$");
    else checkDashboard(walker, types, value);
    for (const finding of walker.findings) console.log(`${file}: ${finding}`);
    findings += walker.findings.length;
  }
  if (findings === 0) console.log(`${files.length} ${kind} file(s) match the vendor types`);
  return findings === 0 ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
