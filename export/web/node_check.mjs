// Runs a web export's translator.js in Node.js, with onnxruntime-web's Node
// build and the export's own SentencePiece WebAssembly file: the
// JavaScript side of `export.web.verify` (one process for every request).
//
//   node node_check.mjs < request.json > answer.json
//
// request: {"dir": web export folder, "requests": [{"texts": any,
//   "beam": any}], "bad_dirs": [folders that must fail to load]}
// answer: {"load_seconds", "results": [{"sourceIds", "targetIds",
//   "translations", "scores"} or {"error": {"name", "message"}}],
//   "bad_dirs": [{"error": ...} or {"loaded": true}]}
import { readFile } from "node:fs/promises";
import { pathToFileURL, fileURLToPath } from "node:url";
import * as ort from "onnxruntime-web";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString("utf-8"));

ort.env.wasm.numThreads = 1;  // Tests share the machine; one thread.
const folder = (dir) => pathToFileURL(dir.endsWith("/") ? dir : dir + "/");
const fetchBytes = async (url) => {
  const bytes = await readFile(fileURLToPath(url));
  return bytes.buffer.slice(bytes.byteOffset,
                            bytes.byteOffset + bytes.byteLength);
};
const base = folder(request.dir);
const { Translator, tokenizerClass } = await import(
  new URL("translator.js", base).href);
const manifest = JSON.parse(await readFile(
  fileURLToPath(new URL("onnx_config.json", base)), "utf-8"));
const Tokenizer = tokenizerClass(
  await import(new URL(manifest.web.tokenizer, base).href));
const options = { ort, Tokenizer, fetchBytes };
const failure = (error) => ({ error: { name: error.name,
                                       message: error.message } });

const start = performance.now();
const translator = await Translator.load(base, options);
const answer = { load_seconds: (performance.now() - start) / 1000,
                 results: [], bad_dirs: [] };
for (const { texts, beam } of request.requests) {
  try {
    answer.results.push(await translator.translateDetailed(texts, { beam }));
  } catch (error) {
    answer.results.push(failure(error));
  }
}
for (const dir of request.bad_dirs || []) {
  try {
    await Translator.load(folder(dir), options);
    answer.bad_dirs.push({ loaded: true });
  } catch (error) {
    answer.bad_dirs.push(failure(error));
  }
}
await translator.dispose();
process.stdout.write(JSON.stringify(answer));
