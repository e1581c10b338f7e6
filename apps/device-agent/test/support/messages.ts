import { pathToFileURL } from 'node:url';
import type { DesiredState, InferenceRequest } from '@flotilla/protocol';
import type { TinyModel } from './engine.js';

/** A short chat request for the `tiny` model; tests override what they exercise. */
export function inferenceRequest(overrides: Partial<InferenceRequest> = {}): InferenceRequest {
  return {
    v: 1,
    requestId: 'req-1',
    attempt: 1,
    model: 'tiny',
    messages: [{ role: 'user', content: 'Hello there' }],
    priority: 5,
    sentAt: Date.now(),
    deadline: Date.now() + 60_000,
    stream: false,
    maxTokens: 8,
    temperature: 0,
    ...overrides,
  };
}

/** Desired state version 1: the `tiny` model loaded (from `url`, by default the file itself). */
export function desiredTiny(
  tiny: TinyModel,
  options: { url?: string; contextSize: number; parallel: number; maxParallelRequests: number; maxQueueLength: number },
): DesiredState {
  return {
    v: 1,
    version: 1,
    ts: Date.now(),
    models: [
      {
        name: 'tiny',
        url: options.url ?? pathToFileURL(tiny.path).href,
        sha256: tiny.sha256,
        sizeBytes: tiny.sizeBytes,
        pinned: false,
        loaded: true,
        contextSize: options.contextSize,
        parallel: options.parallel,
      },
    ],
    limits: { maxParallelRequests: options.maxParallelRequests, maxQueueLength: options.maxQueueLength },
  };
}
