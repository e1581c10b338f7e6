import { describe, expect, it } from 'vitest';
import { ChatCompletionRequestSchema, OpenAiErrorBodySchema } from './gateway.js';
import { AlertSchema, StreamEventSchema, UsageQuerySchema, usageWindowMs } from './observability.js';

describe('observability REST contract', () => {
  it('takes usage windows up to 30 days, one hour by default', () => {
    expect(UsageQuerySchema.parse({})).toEqual({ window: '1h' });
    expect(usageWindowMs(UsageQuerySchema.parse({ window: '30d' }).window)).toBe(30 * 86_400_000);
    expect(UsageQuerySchema.safeParse({ window: '31d' }).error?.issues[0]?.message).toBe('at most 30d');
    expect(UsageQuerySchema.safeParse({ window: 'forever' }).success).toBe(false);
  });

  it('sends alert times as ISO strings, never as Date objects', () => {
    const alert = { id: 'a', rule: 'queue-high', severity: 'warning', subject: 'fleet', state: 'open', value: 1, threshold: 2, message: null, resolvedAt: null };
    expect(AlertSchema.safeParse({ ...alert, openedAt: '2026-01-01T00:00:00.000Z' }).success).toBe(true);
    expect(AlertSchema.safeParse({ ...alert, openedAt: new Date() }).success).toBe(false);
  });

  it('types each stream event by its type', () => {
    const event = { id: 'b.1', type: 'fleet.health', data: { status: 'degraded', previous: 'healthy', at: '2026-01-01T00:00:00.000Z' }, at: '2026-01-01T00:00:00.000Z' };
    expect(StreamEventSchema.parse(event)).toEqual(event);
    expect(StreamEventSchema.safeParse({ ...event, data: { status: 'fine', previous: null, at: event.at } }).success).toBe(false);
    expect(StreamEventSchema.safeParse({ ...event, type: 'no.such' }).success).toBe(false);
  });
});

describe('gateway REST contract', () => {
  it('joins OpenAI text parts and refuses more than one choice', () => {
    const body = ChatCompletionRequestSchema.parse({ model: 'auto', messages: [{ role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }] });
    expect(body.messages[0]).toEqual({ role: 'user', content: 'ab' });
    expect(ChatCompletionRequestSchema.safeParse({ model: 'auto', messages: [{ role: 'user', content: 'x' }], n: 2 }).success).toBe(false);
  });

  it("keeps OpenAI's error shape: param is present, null when no field is to blame", () => {
    expect(OpenAiErrorBodySchema.safeParse({ error: { message: 'm', type: 'invalid_request_error', param: null, code: 'c' } }).success).toBe(true);
    expect(OpenAiErrorBodySchema.safeParse({ error: { message: 'm', type: 'invalid_request_error', code: 'c' } }).success).toBe(false);
  });
});
