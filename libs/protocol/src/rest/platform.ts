import { z } from 'zod';

// REST contract of the platform routes: liveness, readiness and the OpenAPI document.

/** `GET /healthz` answer: the process answers. */
export const LivenessSchema = z.object({ status: z.literal('ok') });
export type Liveness = z.infer<typeof LivenessSchema>;

/** `GET /readyz` answer (200 when ready, 503 with the same body when not): one entry per dependency. */
export const ReadinessReportSchema = z.object({
  status: z.enum(['ready', 'not-ready']),
  checks: z.record(z.string(), z.object({ ok: z.boolean(), error: z.string().optional() })),
});
export type ReadinessReport = z.infer<typeof ReadinessReportSchema>;

type JsonSchemaObject = Record<string, unknown>;
const JsonObject: z.ZodType<JsonSchemaObject> = z.record(z.string(), z.json());

/** `GET /api/v1/openapi.json` answer: an OpenAPI 3.1 document (its schemas are JSON Schema 2020-12 objects). */
export const OpenApiDocumentSchema = z.object({
  openapi: z.literal('3.1.0'),
  info: z.object({ title: z.string(), version: z.string(), description: z.string().optional() }),
  jsonSchemaDialect: z.string(),
  tags: z.array(z.object({ name: z.string() })),
  /** path -> method -> operation */
  paths: z.record(z.string(), z.record(z.string(), JsonObject)),
  components: z.object({
    securitySchemes: z.record(z.string(), JsonObject),
    schemas: z.record(z.string(), JsonObject),
    responses: z.record(z.string(), JsonObject),
  }),
});
export type OpenApiDocument = z.infer<typeof OpenApiDocumentSchema>;
