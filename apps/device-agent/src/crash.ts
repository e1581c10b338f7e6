import type { Logger } from './logger.js';

/**
 * A rejection nobody handles or an exception nobody catches leaves the agent in an unknown state: log it (fatal, with
 * the error) and exit non-zero so that the service manager (systemd `Restart=on-failure`) starts a clean process.
 * Returns a function that removes the handlers.
 */
export function installCrashHandlers(logger: Logger, target: NodeJS.Process = process): () => void {
  let exiting = false;
  const die = (kind: 'unhandledRejection' | 'uncaughtException', error: unknown): void => {
    if (exiting) return;
    exiting = true;
    logger.fatal({ err: error, kind }, `${kind === 'unhandledRejection' ? 'unhandled promise rejection' : 'uncaught exception'}: exiting so that the service manager restarts the agent`);
    const exit = (): never => target.exit(1);
    // The log destination is asynchronous: flush it first, but never hang on it.
    setTimeout(exit, 2000);
    logger.flush(() => exit());
  };
  const onRejection = (reason: unknown): void => die('unhandledRejection', reason);
  const onException = (error: Error): void => die('uncaughtException', error);
  target.on('unhandledRejection', onRejection);
  target.on('uncaughtException', onException);
  return () => {
    target.off('unhandledRejection', onRejection);
    target.off('uncaughtException', onException);
  };
}
