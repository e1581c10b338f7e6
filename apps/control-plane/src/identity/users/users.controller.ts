import { Body, Controller, Get, Param, Patch, Post, Req } from '@nestjs/common';
import { type AuthedRequest, RequireRole } from '../auth/auth.guard.js';
import { unauthorized } from '../../platform/common/app-error.js';
import { parseInput } from '../../platform/common/parse.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { type ApiKeyView, CreateApiKeySchema, CreateUserSchema, UsersService, UpdateUserSchema, type UserView } from './users.service.js';

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
  @ApiDoc({ summary: 'List users', tags: ['identity'] })
  async users(): Promise<{ items: UserView[] }> {
    return { items: await this.identity.listUsers() };
  }

  @RequireRole('admin')
  @Post('users')
  @ApiDoc({ summary: 'Create a user with a role', tags: ['identity'], body: CreateUserSchema, errors: [409] })
  createUser(@Body() body: unknown, @Req() request: AuthedRequest): Promise<UserView> {
    return this.identity.createUser(parseInput(CreateUserSchema, body), principalOf(request).actor);
  }

  @RequireRole('admin')
  @Patch('users/:id')
  @ApiDoc({ summary: "Change a user's role or password, or disable the user", tags: ['identity'], body: UpdateUserSchema, errors: [404, 409] })
  updateUser(@Param('id') id: string, @Body() body: unknown, @Req() request: AuthedRequest): Promise<UserView> {
    return this.identity.updateUser(id, parseInput(UpdateUserSchema, body), principalOf(request).actor);
  }

  @RequireRole('admin')
  @Get('api-keys')
  @ApiDoc({ summary: 'List API keys (prefixes only)', tags: ['identity'] })
  async apiKeys(): Promise<{ items: ApiKeyView[] }> {
    return { items: await this.identity.listApiKeys() };
  }

  @RequireRole('admin')
  @Post('api-keys')
  @ApiDoc({ summary: 'Create an API key; its secret is shown once', tags: ['identity'], body: CreateApiKeySchema })
  createApiKey(@Body() body: unknown, @Req() request: AuthedRequest): Promise<ApiKeyView & { key: string }> {
    const principal = principalOf(request);
    return this.identity.createApiKey(parseInput(CreateApiKeySchema, body), principal.actor, principal.userId);
  }

  @RequireRole('admin')
  @Post('api-keys/:id/revoke')
  @ApiDoc({ summary: 'Revoke an API key', tags: ['identity'], errors: [404] })
  revokeApiKey(@Param('id') id: string, @Req() request: AuthedRequest): Promise<ApiKeyView> {
    return this.identity.revokeApiKey(id, principalOf(request).actor);
  }
}
