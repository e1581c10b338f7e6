import { PROTOCOL_VERSION } from '@flotilla/protocol';

export function App() {
  return (
    <main>
      <h1>Flotilla</h1>
      <p>Protocol {PROTOCOL_VERSION}</p>
    </main>
  );
}
