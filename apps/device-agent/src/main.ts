import { PROTOCOL_VERSION } from '@flotilla/protocol';

console.log(PROTOCOL_VERSION);
