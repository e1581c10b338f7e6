/**
 * Bounds for strings and arrays. [P-1.4] Every string and array in every message is bounded so a peer can never make
 * the other side hold unbounded data; the whole payload is also bounded by MAX_PAYLOAD_BYTES.
 */
export const LIMITS = {
  /** ids chosen by the sender: requestId, commandId, sessionId */
  idLength: 128,
  /** model names as used in requests and desired state */
  modelNameLength: 128,
  /** short labels: versions, os names, gpu names, file names */
  shortText: 256,
  /** one-line human messages (errors, events) */
  messageLength: 2048,
  urlLength: 2048,
  /** one chat message's content, a tool call's arguments, a continuation */
  contentLength: 256 * 1024,
  /** one streamed delta */
  deltaLength: 64 * 1024,
  /** token ids of one streamed chunk */
  chunkTokenIds: 4096,
  /** token ids a continuation re-sends (more: the gateway sends the text only) */
  continuationTokenIds: 32 * 1024,
  chatMessages: 512,
  tools: 128,
  toolCalls: 64,
  stopSequences: 8,
  stopLength: 128,
  gpus: 16,
  models: 256,
  runtimes: 16,
  labels: 64,
  mqttUrls: 8,
  tokenLength: 512,
  credentialLength: 512,
} as const;
