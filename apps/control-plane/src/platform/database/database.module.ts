import { Global, Inject, Injectable, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import { DATABASE } from '../tokens.js';
import { PrismaClient } from '../../generated/prisma/client.js';
import { openDatabase, type Database, type OpenDatabaseOptions } from './database.js';

export type DatabaseModuleOptions =
  | (OpenDatabaseOptions & { database?: undefined })
  /** a database opened outside Nest (e.g. by main.ts before the app is built); closed on shutdown all the same */
  | { database: Database };

/** Closes the database when the app shuts down (`app.close()` or a shutdown hook). */
@Injectable()
export class DatabaseLifecycle implements OnApplicationShutdown {
  constructor(@Inject(DATABASE) private readonly database: Database) {}

  async onApplicationShutdown(): Promise<void> {
    await this.database.close();
  }
}

/**
 * Provides the `Database` under the `DATABASE` token and its Prisma client under the `PrismaClient` class, so a
 * service can simply ask for `private readonly prisma: PrismaClient`. Global: import it once, in the root module.
 */
@Global()
@Module({})
export class DatabaseModule {
  static forRoot(options: DatabaseModuleOptions): DynamicModule {
    const databaseProvider =
      options.database !== undefined
        ? { provide: DATABASE, useValue: options.database }
        : { provide: DATABASE, useFactory: () => openDatabase(options) };
    return {
      module: DatabaseModule,
      providers: [
        databaseProvider,
        { provide: PrismaClient, useFactory: (database: Database) => database.prisma, inject: [DATABASE] },
        DatabaseLifecycle,
      ],
      exports: [DATABASE, PrismaClient],
    };
  }
}
