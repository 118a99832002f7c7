/**
 * translator.js: translate text in a web page with a keras-transformer web
 * export (`keras-transformer export --format web`), offline.
 *
 * The folder holds the ONNX token graphs (the whole cached greedy or beam
 * search in one graph), the SentencePiece models and their manifest
 * (`onnx_config.json`). This module tokenizes with SentencePiece compiled
 * to WebAssembly (@mlc-ai/web-tokenizers: the C++ library, so the ids are
 * those of Python's `sentencepiece` and TensorFlow), runs a token graph
 * with onnxruntime-web and detokenizes, keeping the input rules of every
 * other runtime of the package (keras_transformer/contract.py):
 *
 * - a source longer than `max_source_tokens` tokens is truncated to its
 *   first `max_source_tokens`, then `[END]` is added;
 * - a SentencePiece id at or above the manifest's `source_vocab_size` is
 *   read as `[UNK]` (`knownTokenId`: an imported Marian model keeps
 *   pieces beyond the model's ids so that text segments as in Marian);
 * - a batch is padded with `[PAD]` to its longest source (the output limit,
 *   source + 50 tokens, follows the longest source of the batch, as in
 *   Python: translate the same batches to get the same outputs);
 * - a text with no token (empty, or whitespace only) translates to "" with
 *   score 0; an empty batch gives an empty array;
 * - a translation is detokenized up to its first `[END]`;
 * - minimum length, n-gram blocking and the output limit are inside the
 *   graphs.
 *
 * Bad input is an error, never a hang: `texts` not an array of strings
 * (TypeError), a text with a lone surrogate (TypeError: not Unicode
 * text), a text longer than `maxTextLength` characters (RangeError), a
 * folder that is not a web export (Error naming the file).
 *
 * Browsers refuse `fetch` on file:// pages: serve the folder over HTTP
 * (`keras-transformer serve-web DIR`, or any static server).
 *
 * Usage:
 *
 *     import { Translator } from "./translator.js";
 *     const translator = await Translator.load("./");
 *     const results = await translator.translate(["forty-two"], {beam: true});
 *     // [{translation: "zweiundvierzig", score: -0.41}]
 *     await translator.translateDetailed(texts, {beam: false});
 *     // {sourceIds, targetIds, translations, scores}
 *     await translator.translateTokens(sourceIds, {beam: true});
 *     // {targetIds, scores}: the graph alone, no input rule
 *
 * `Translator.load(baseUrl, options)` options, all optional:
 *   ort: an onnxruntime-web module (default: `globalThis.ort`, else the
 *     folder's ort.wasm.min.js is loaded with a <script> tag);
 *   Tokenizer: the `Tokenizer` class of @mlc-ai/web-tokenizers (default:
 *     the folder's copy, imported);
 *   fetchBytes: async (url: URL) => ArrayBuffer (default: `fetch`);
 *   numThreads: onnxruntime-web's WebAssembly threads (default: its own
 *     choice; threads need a cross-origin isolated page);
 *   maxTextLength: the longest text accepted, in UTF-16 code units
 *     (default 100000).
 */

/** The manifest of an export (keras_transformer.contract.ONNX_MANIFEST). */
export const MANIFEST = "onnx_config.json";
/** The longest text accepted by default, in UTF-16 code units. */
export const MAX_TEXT_LENGTH = 100000;

const FORMAT = "keras-transformer-onnx";

function describe(value) {
  if (typeof value === "string") {
    return JSON.stringify(value.length > 60 ? value.slice(0, 60) + "..." :
                          value);
  }
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (value === null) return "null";
  return typeof value === "object" ? "an object" : String(value);
}

async function defaultFetchBytes(url) {
  if (typeof location !== "undefined" && location.protocol === "file:") {
    throw new Error(
      "A web export cannot run from a file:// page (browsers refuse fetch " +
      "there): serve its folder over HTTP, e.g. `keras-transformer " +
      "serve-web DIR`.");
  }
  const response = await fetch(url);
  if (!response.ok) {
    throw new Error(`${url} answered ${response.status} ` +
                    `${response.statusText}`.trimEnd());
  }
  return response.arrayBuffer();
}

function loadScript(url) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = url.href;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load ${url}`));
    document.head.append(script);
  });
}

async function readManifest(base, fetchBytes) {
  const url = new URL(MANIFEST, base);
  let manifest;
  try {
    manifest = JSON.parse(new TextDecoder().decode(await fetchBytes(url)));
  } catch (error) {
    throw new Error(
      `\`baseUrl\` must be a web export folder with ${MANIFEST}; reading ` +
      `it failed (${error.message}). Received: baseUrl=${base}`);
  }
  const graphs = manifest && manifest.graphs;
  if (!manifest || manifest.format !== FORMAT || !graphs ||
      typeof graphs !== "object" || !manifest.web) {
    throw new Error(
      `\`baseUrl\` must be a web export folder: its ${MANIFEST} is not a ` +
      `web export's manifest (format ${describe(manifest && manifest.format)}` +
      `). Received: baseUrl=${base}`);
  }
  return manifest;
}

/** Checks `texts`; returns them (an array of well-formed strings). */
export function checkTexts(texts, maxTextLength = MAX_TEXT_LENGTH) {
  if (!Array.isArray(texts)) {
    throw new TypeError(
      "`texts` must be an array of strings (wrap one text in [ ]). " +
      `Received: texts=${describe(texts)}`);
  }
  texts.forEach((text, i) => {
    if (typeof text !== "string") {
      throw new TypeError(
        `\`texts\` must contain only strings. Received: texts[${i}]=` +
        describe(text));
    }
    if (text.length > maxTextLength) {
      throw new RangeError(
        `\`texts[${i}]\` must be at most ${maxTextLength} characters ` +
        `(maxTextLength). Received: a text of ${text.length}`);
    }
    if (!isWellFormed(text)) {
      throw new TypeError(
        `\`texts[${i}]\` must be Unicode text; it holds a lone surrogate. ` +
        `Received: texts[${i}]=${describe(text)}`);
    }
  });
  return texts;
}

function isWellFormed(text) {
  if (typeof text.isWellFormed === "function") return text.isWellFormed();
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/
    .test(text);
}

/** Text in, text out, with a web export's token graphs. */
export class Translator {
  constructor(manifest, sessions, sourceTokenizer, targetTokenizer, ort,
              maxTextLength) {
    this.manifest = manifest;
    this.modes = Object.keys(sessions).sort();
    this._sessions = sessions;
    this._source = sourceTokenizer;
    this._target = targetTokenizer;
    this._ort = ort;
    this.maxTextLength = maxTextLength;
    this._queue = Promise.resolve();
  }

  /**
   * Loads a web export folder.
   *
   * @param {string|URL} baseUrl the folder (its URL, or one relative to the
   *   page); defaults to the folder of this module.
   * @param {object} options see the module's documentation.
   * @returns {Promise<Translator>}
   */
  static async load(baseUrl = new URL(".", import.meta.url), options = {}) {
    const pageUrl = typeof location !== "undefined" ? location.href :
      import.meta.url;
    let base = new URL(String(baseUrl), pageUrl);
    if (!base.pathname.endsWith("/")) base = new URL(base.href + "/");
    const fetchBytes = options.fetchBytes || defaultFetchBytes;
    const maxTextLength = options.maxTextLength ?? MAX_TEXT_LENGTH;
    const manifest = await readManifest(base, fetchBytes);
    const web = manifest.web;

    let ort = options.ort || globalThis.ort;
    if (!ort) {
      await loadScript(new URL(web.onnxruntime, base));
      ort = globalThis.ort;
    }
    if (!options.ort) ort.env.wasm.wasmPaths = base.href;
    if (options.numThreads !== undefined) {
      if (!Number.isInteger(options.numThreads) || options.numThreads < 1) {
        throw new RangeError(
          "`numThreads` must be an integer >= 1. Received: numThreads=" +
          describe(options.numThreads));
      }
      ort.env.wasm.numThreads = options.numThreads;
    }
    let Tokenizer = options.Tokenizer;
    if (!Tokenizer) {
      Tokenizer = tokenizerClass(
        await import(new URL(web.tokenizer, base).href));
    }

    const read = async (name) => {
      try {
        return await fetchBytes(new URL(name, base));
      } catch (error) {
        throw new Error(`The web export at ${base} lacks ${name} ` +
                        `(${error.message}).`);
      }
    };
    // One file after the other, so that a folder missing both names the
    // same one (the source model) every time.
    const sourceBytes = await read(manifest.source_model);
    const targetBytes = await read(manifest.target_model);
    // One tokenizer after the other: creating two at once races the
    // WebAssembly module's start-up.
    const source = await Tokenizer.fromSentencePiece(sourceBytes);
    const target = sameBytes(sourceBytes, targetBytes) ? source :
      await Tokenizer.fromSentencePiece(targetBytes);
    const sessions = {};
    for (const [mode, name] of Object.entries(manifest.graphs)) {
      const bytes = new Uint8Array(await read(name));
      sessions[mode] = await ort.InferenceSession.create(
        bytes, {executionProviders: ["wasm"]});
    }
    return new Translator(manifest, sessions, source, target, ort,
                          maxTextLength);
  }

  /**
   * Translates texts.
   *
   * @param {string[]} texts the source texts (one batch).
   * @param {{beam?: boolean}} options beam search (the default) or greedy.
   * @returns {Promise<{translation: string, score: number}[]>}
   */
  async translate(texts, options = {}) {
    const result = await this.translateDetailed(texts, options);
    return result.translations.map((translation, i) => (
      {translation, score: result.scores[i]}));
  }

  /**
   * Translates texts and returns the ids too.
   *
   * @returns {Promise<{sourceIds: number[][], targetIds: number[][],
   *   translations: string[], scores: number[]}>} `sourceIds` as the graph
   *   reads them (truncated, `[END]`, padded), `targetIds` as it wrote
   *   them (padded).
   */
  translateDetailed(texts, options = {}) {
    return this._enqueue(() => this._translate(texts, options));
  }

  /** Runs `work` after every call before it: a session runs one call at
   *  once. A failed call does not stop the ones after it. */
  _enqueue(work) {
    const result = this._queue.then(work);
    this._queue = result.catch(() => undefined);
    return result;
  }

  /** The source ids of `texts` (B rows of S ids), as Python makes them. */
  sourceIds(texts) {
    checkTexts(texts, this.maxTextLength);
    const m = this.manifest;
    const rows = texts.map((text) => [
      ...Array.from(this._source.encode(text), (id) => knownTokenId(id, m))
        .slice(0, m.max_source_tokens),
      m.end_id]);
    const width = Math.max(0, ...rows.map((row) => row.length));
    return rows.map((row) => row.concat(
      new Array(width - row.length).fill(m.pad_id)));
  }

  /** The text of one row of target ids: up to `[END]`, without `[PAD]`,
   *  `[START]`. */
  detokenize(ids) {
    const m = this.manifest;
    const kept = [];
    for (const id of ids) {
      if (id === m.end_id) break;
      if (id !== m.pad_id && id !== m.start_id) kept.push(id);
    }
    return this._target.decode(Int32Array.from(kept));
  }

  /**
   * Runs a token graph on source ids, as `sourceIds` makes them (B rows of
   * S ids: tokens, `[END]`, `[PAD]`). No input rule is applied here.
   *
   * @param {number[][]} sourceIds B rows of S ids.
   * @param {{beam?: boolean}} options beam search (the default) or greedy.
   * @returns {Promise<{targetIds: number[][], scores: number[]}>}
   */
  translateTokens(sourceIds, options = {}) {
    return this._enqueue(() => this._search(sourceIds, options));
  }

  async _search(sourceIds, {beam = true} = {}) {
    if (typeof beam !== "boolean") {
      throw new TypeError(`\`beam\` must be a boolean. Received: beam=` +
                          describe(beam));
    }
    const mode = beam ? "beam" : "greedy";
    if (!this._sessions[mode]) {
      throw new Error(`This export has no ${mode} search (it has ` +
                      `${this.modes.join(", ")}).`);
    }
    if (sourceIds.length === 0) return {targetIds: [], scores: []};
    const width = sourceIds[0].length;
    const feed = new this._ort.Tensor(
      "int32", Int32Array.from(sourceIds.flat()), [sourceIds.length, width]);
    const outputs = await this._sessions[mode].run({source_ids: feed});
    // By name: outputs do not come back in the graph's order.
    const ids = outputs.target_ids;
    const length = ids.dims[1];
    return {
      targetIds: sourceIds.map((_, row) => Array.from(
        ids.data.subarray(row * length, (row + 1) * length))),
      scores: Array.from(outputs.score.data),
    };
  }

  async _translate(texts, options) {
    const sourceIds = this.sourceIds(texts);
    const {targetIds, scores} = await this._search(sourceIds, options);
    const empty = sourceIds.map((row) => row[0] === this.manifest.end_id);
    return {
      sourceIds, targetIds,
      translations: targetIds.map((row, i) => (
        empty[i] ? "" : this.detokenize(row))),
      scores: scores.map((score, i) => (empty[i] ? 0 : score)),
    };
  }

  /** Releases the sessions and tokenizers. */
  async dispose() {
    for (const session of Object.values(this._sessions)) {
      await session.release();
    }
    this._source.dispose();
    if (this._target !== this._source) this._target.dispose();
  }
}

/** A source tokenizer id as the model reads it: `[UNK]` at or above the
 *  manifest's `source_vocab_size` (keras_transformer.contract
 *  .known_token_ids). */
export function knownTokenId(id, manifest) {
  return id < (manifest.source_vocab_size ?? Infinity) ? id : manifest.unk_id;
}

/** The `Tokenizer` class of @mlc-ai/web-tokenizers, imported as `module`:
 *  a UMD file, so a module (browsers: it sets `globalThis.tokenizers`) or
 *  CommonJS (Node.js). */
export function tokenizerClass(module) {
  const Tokenizer = module.Tokenizer || (module.default || {}).Tokenizer ||
    (globalThis.tokenizers || {}).Tokenizer;
  if (typeof Tokenizer !== "function") {
    throw new Error("The tokenizer file is not @mlc-ai/web-tokenizers.");
  }
  return Tokenizer;
}

function sameBytes(a, b) {
  if (a.byteLength !== b.byteLength) return false;
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  return x.every((value, i) => value === y[i]);
}
