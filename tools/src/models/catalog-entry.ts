import { pathToFileURL } from 'node:url';
import type { ModelInput } from '@flotilla/protocol';
import type { GeneratedModelInfo } from './generate.js';

/** The control plane's catalog body (`POST /api/v1/models`, sizes in bytes) for a generated file that agents on this machine read. */
export type CatalogEntry = ModelInput;

export function catalogEntry(model: GeneratedModelInfo, options: { name: string; tier?: CatalogEntry['tier']; memoryBytes?: number }): CatalogEntry {
  return {
    name: options.name,
    sourceUrl: pathToFileURL(model.path).href,
    sha256: model.sha256,
    sizeBytes: model.sizeBytes,
    quantization: model.quantization,
    // Weights plus a 2048-token KV cache, rounded up to whole MiB: what a placement must leave free.
    memoryBytes: options.memoryBytes ?? Math.ceil((model.sizeBytes + 2048 * model.kvCacheBytesPerToken) / 2 ** 20) * 2 ** 20,
    contextLength: model.contextLength,
    tier: options.tier ?? 'small',
  };
}
