import { Body, Controller, Get, Param, Patch, Post, Req } from '@nestjs/common';
import {
  type ApiKeyList,
  ApiKeyListSchema,
  ApiKeySchema,
  type ApiKeyView,
  CreateApiKeyRequestSchema,
  type CreatedApiKey,
  CreatedApiKeySchema,
  CreateUserRequestSchema,
  IdentityIdParamsSchema,
  UpdateUserRequestSchema,
  type UserList,
  UserListSchema,
  UserSchema,
  type UserView,
} from '@flotilla/protocol';
import { type AuthedRequest, RequireRole } from '../auth/auth.guard.js';
import { unauthorized } from '../../platform/common/app-error.js';
import { parseInput } from '../../platform/common/parse.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { UsersService } from './users.service.js';

function principalOf(request: AuthedRequest) {
  if (!request.principal) throw unauthorized();
  return request.principal;
}

/** Admin users (roles admin, operator, viewer) and API keys (admin-scoped with a role, or gateway keys). */
@Controller('api/v1')
export class UsersController {
  constructor(private readonly identity: UsersService) {}

  @RequireRole('admin')
  @Get('users')
  @ApiDoc({ summary: 'List users', tags: ['identity'], response: UserListSchema })
  async users(): Promise<UserList> {
    return { items: await this.identity.listUsers() };
  }

  @RequireRole('admin')
  @Post('users')
  @ApiDoc({ summary: 'Create a user with a role', tags: ['identity'], body: CreateUserRequestSchema, response: UserSchema, errors: [409] })
  createUser(@Body() body: unknown, @Req() request: AuthedRequest): Promise<UserView> {
    return this.identity.createUser(parseInput(CreateUserRequestSchema, body), principalOf(request).actor);
  }

  @RequireRole('admin')
  @Patch('users/:id')
  @ApiDoc({
    summary: "Change a user's role or password, or disable the user",
    tags: ['identity'],
    params: IdentityIdParamsSchema,
    body: UpdateUserRequestSchema,
    response: UserSchema,
    errors: [404, 409],
  })
  updateUser(@Param() params: unknown, @Body() body: unknown, @Req() request: AuthedRequest): Promise<UserView> {
    const { id } = parseInput(IdentityIdParamsSchema, params);
    return this.identity.updateUser(id, parseInput(UpdateUserRequestSchema, body), principalOf(request).actor);
  }

  @RequireRole('admin')
  @Get('api-keys')
  @ApiDoc({ summary: 'List API keys (prefixes only)', tags: ['identity'], response: ApiKeyListSchema })
  async apiKeys(): Promise<ApiKeyList> {
    return { items: await this.identity.listApiKeys() };
  }

  @RequireRole('admin')
  @Post('api-keys')
  @ApiDoc({ summary: 'Create an API key; its secret is shown once', tags: ['identity'], body: CreateApiKeyRequestSchema, response: CreatedApiKeySchema })
  createApiKey(@Body() body: unknown, @Req() request: AuthedRequest): Promise<CreatedApiKey> {
    const principal = principalOf(request);
    return this.identity.createApiKey(parseInput(CreateApiKeyRequestSchema, body), principal.actor, principal.userId);
  }

  @RequireRole('admin')
  @Post('api-keys/:id/revoke')
  @ApiDoc({ summary: 'Revoke an API key (idempotent)', tags: ['identity'], params: IdentityIdParamsSchema, response: ApiKeySchema, errors: [404] })
  revokeApiKey(@Param() params: unknown, @Req() request: AuthedRequest): Promise<ApiKeyView> {
    return this.identity.revokeApiKey(parseInput(IdentityIdParamsSchema, params).id, principalOf(request).actor);
  }
}
