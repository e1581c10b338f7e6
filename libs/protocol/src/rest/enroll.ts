import { z } from 'zod';
import { LIMITS } from '../limits.js';
import { DeviceIdSchema, shortText } from '../schemas/common.js';
import { HardwareSchema } from '../schemas/hello.js';

/** [P-5.1] Path of the enrollment endpoint. */
export const ENROLL_PATH = '/api/v1/enroll' as const;

/** [P-5.1] `POST /api/v1/enroll` body: a bootstrap token, optionally a display name and a hardware summary. */
export const EnrollRequestSchema = z.object({
  token: z.string().min(1).max(LIMITS.tokenLength),
  name: z.string().min(1).max(LIMITS.modelNameLength).optional(),
  agentVersion: shortText(1).optional(),
  hardware: HardwareSchema.optional(),
});
export type EnrollRequest = z.infer<typeof EnrollRequestSchema>;

export const MqttUrlSchema = z.url({ protocol: /^(mqtt|mqtts|ws|wss)$/ }).max(LIMITS.urlLength);

/**
 * [P-5.1] Enrollment answer: the device's id (also its MQTT client id) and its own MQTT credentials. The password is
 * shown once; the agent stores it and never enrolls again.
 */
export const EnrollResponseSchema = z.object({
  deviceId: DeviceIdSchema,
  mqtt: z.object({
    username: z.string().min(1).max(LIMITS.credentialLength),
    password: z.string().min(1).max(LIMITS.credentialLength),
    /** broker URLs in order of preference, e.g. mqtt://cp.local:1883 */
    urls: z.array(MqttUrlSchema).min(1).max(LIMITS.mqttUrls),
  }),
});
export type EnrollResponse = z.infer<typeof EnrollResponseSchema>;
