import type { Actor } from '../audit/audit.service.js';

import type { Role } from '../../platform/common/route-access.js';

export type { Role } from '../../platform/common/route-access.js';

/** An authenticated caller of the REST API. */
export interface Principal {
  actor: Actor;
  role: Role;
  userId: string | null;
}

const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

export function roleAtLeast(role: Role, required: Role): boolean {
  return RANK[role] >= RANK[required];
}
