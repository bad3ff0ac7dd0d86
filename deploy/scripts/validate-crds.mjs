// Validates CRD objects (cert-manager, Prometheus Operator) that kubernetes-validate has no
// schema for, with the @kubernetes-models packages (JSON schemas generated from the projects'
// CRDs). deploy/check.sh copies this file next to its node_modules and runs:
//
//   node validate-crds.mjs schema objects.json   each object's validate() (types, formats,
//                                                patterns, enums, required fields)
//   node validate-crds.mjs fields objects.json   unknown fields: CRD schemas allow them (the API
//                                                server prunes them silently), so each object is
//                                                written as a TypeScript literal of its model's
//                                                interface and tsc's excess-property check
//                                                reports any field the CRD does not define
//
// objects.json is validate.py crds' output: [{where, package, object}].
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const [mode, file] = process.argv.slice(2);
const items = JSON.parse(readFileSync(file, "utf8"));

function moduleOf(item) {
  const [group, version] = item.object.apiVersion.split("/");
  return `@kubernetes-models/${item.package}/${group}/${version}`;
}

// The API server decodes `format: byte` strings with Go's base64, which skips \r and \n
// (kustomize folds long values); the JSON-schema `byte` format does not, so unfold first.
function unfoldBytes(node) {
  if (Array.isArray(node)) return node.map(unfoldBytes);
  if (node && typeof node === "object") {
    return Object.fromEntries(
      Object.entries(node).map(([k, v]) => [k, k === "caBundle" && typeof v === "string" ? v.replace(/[\r\n]/g, "") : unfoldBytes(v)]),
    );
  }
  return node;
}

let failures = 0;
if (mode === "schema") {
  for (const item of items) {
    const mod = await import(moduleOf(item));
    const Model = mod[item.object.kind];
    if (typeof Model !== "function") {
      console.error(`${item.where}: ${moduleOf(item)} has no model for kind ${item.object.kind}`);
      failures++;
      continue;
    }
    try {
      new Model(unfoldBytes(item.object)).validate();
    } catch (e) {
      console.error(`${item.where}: ${e.message}`);
      failures++;
    }
  }
  console.error(`${items.length} CRD objects validated`);
} else if (mode === "fields") {
  const dir = join(here, "ts-fields");
  mkdirSync(dir, { recursive: true });
  const modules = [...new Set(items.map(moduleOf))];
  const lines = modules.map((m, i) => `import type * as M${i} from ${JSON.stringify(m)};`);
  const whereByLine = new Map();
  items.forEach((item, n) => {
    const m = modules.indexOf(moduleOf(item));
    lines.push(`export const o${n}: M${m}.I${item.object.kind} = ${JSON.stringify(item.object)};`);
    whereByLine.set(lines.length, item.where);
  });
  writeFileSync(join(dir, "objects.ts"), lines.join("\n") + "\n");
  writeFileSync(
    join(dir, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        strict: true, noEmit: true, module: "nodenext", moduleResolution: "nodenext",
        target: "es2022", skipLibCheck: true, types: [],
      },
      files: ["objects.ts"],
    }),
  );
  try {
    execFileSync(process.execPath, [join(here, "node_modules/typescript/bin/tsc"), "-p", dir], { encoding: "utf8" });
  } catch (e) {
    for (const line of String(e.stdout).split("\n").filter(Boolean)) {
      const m = line.match(/objects\.ts\((\d+),\d+\): (.*)$/);
      console.error(m ? `${whereByLine.get(Number(m[1])) ?? "?"}: ${m[2]}` : line);
      failures++;
    }
    if (failures === 0) failures = 1;
  }
  console.error(`${items.length} CRD objects checked for unknown fields`);
} else {
  console.error("usage: node validate-crds.mjs schema|fields objects.json");
  process.exit(2);
}
process.exit(failures ? 1 : 0);
