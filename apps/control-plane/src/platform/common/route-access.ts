import { SetMetadata } from '@nestjs/common';
import type { Role } from '@flotilla/protocol';

export type { Role } from '@flotilla/protocol';

/**
 * Route access markers. They live in platform so platform controllers (health, OpenAPI) can mark themselves public
 * and the OpenAPI builder can read roles without importing identity; identity's AuthGuard enforces them.
 */
export const REQUIRED_ROLE_KEY = 'flotilla.requiredRole';
export const PUBLIC_KEY = 'flotilla.public';

/** The least role a route needs; routes without it need `admin`. */
export const RequireRole = (role: Role) => SetMetadata(REQUIRED_ROLE_KEY, role);
/** A route anyone may call (health, login, enrollment with its own token). */
export const Public = () => SetMetadata(PUBLIC_KEY, true);
