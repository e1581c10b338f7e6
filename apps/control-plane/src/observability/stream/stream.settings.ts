import { z } from 'zod';

export const STREAM_SETTINGS = Symbol('flotilla.stream-settings');

export interface StreamSettings {
  /** a `heartbeat` event this often on every stream (FLOTILLA_EVENT_STREAM_HEARTBEAT_S, default 15) */
  heartbeatMs: number;
  /** streams beyond this are refused with 503 (FLOTILLA_EVENT_STREAM_MAX_CLIENTS, default 500) */
  maxClients: number;
  /** a stream's credential is checked again this often (FLOTILLA_EVENT_STREAM_REAUTH_S, default 60) */
  reauthenticateMs: number;
}

/** `FLOTILLA_EVENT_STREAM_*`: a section of the control plane's config (composed by loadConfig). */
export const streamEnvSchema = z.object({
  FLOTILLA_EVENT_STREAM_HEARTBEAT_S: z.coerce.number().min(0.1).max(300).default(15),
  FLOTILLA_EVENT_STREAM_MAX_CLIENTS: z.coerce.number().int().min(1).max(100_000).default(500),
  FLOTILLA_EVENT_STREAM_REAUTH_S: z.coerce.number().min(0.1).max(3600).default(60),
});

export function streamSettingsFromEnv(e: z.infer<typeof streamEnvSchema>): StreamSettings {
  return {
    heartbeatMs: e.FLOTILLA_EVENT_STREAM_HEARTBEAT_S * 1000,
    maxClients: e.FLOTILLA_EVENT_STREAM_MAX_CLIENTS,
    reauthenticateMs: e.FLOTILLA_EVENT_STREAM_REAUTH_S * 1000,
  };
}
