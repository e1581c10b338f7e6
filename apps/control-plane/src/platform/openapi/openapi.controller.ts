import { Controller, Get } from '@nestjs/common';
import { OpenApiDocumentSchema } from '@flotilla/protocol';
import { Public } from '../common/route-access.js';
import { ApiDoc } from './api-doc.js';
import type { OpenApiDocument } from './openapi-document.js';
import { OpenApiService } from './openapi.service.js';

@Controller('api/v1')
export class OpenApiController {
  constructor(private readonly openApi: OpenApiService) {}

  /** Public: the API's shape is not a secret, and clients generate their types from it without logging in. */
  @Public()
  @Get('openapi.json')
  @ApiDoc({ summary: 'This OpenAPI 3.1 document', tags: ['meta'], response: OpenApiDocumentSchema })
  document(): OpenApiDocument {
    return this.openApi.getDocument();
  }
}
