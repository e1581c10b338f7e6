/** The RateLimitStore implementation (in-memory now; a shared store for several replicas later). */
export const RATE_LIMIT_STORE = Symbol('flotilla.rate-limit-store');
