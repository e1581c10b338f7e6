import { ErrorCode, httpStatusFor } from '@flotilla/protocol';

/** A failure with a shared error code; the global filter maps it to HTTP. */
export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
    readonly headers?: Record<string, string>,
  ) {
    super(message);
    this.name = 'AppError';
  }

  get status(): number {
    return httpStatusFor(this.code);
  }
}

export const notFound = (what: string) => new AppError(ErrorCode.NOT_FOUND, `${what} not found`);
export const unauthorized = (message = 'authentication required') => new AppError(ErrorCode.UNAUTHORIZED, message);
export const forbidden = (message = 'your role does not allow this') => new AppError(ErrorCode.FORBIDDEN, message);
