import { describe, expect, it } from 'vitest';
import { renderToString } from 'react-dom/server';
import { App } from './app.js';

describe('App', () => {
  it('renders the product name', () => {
    expect(renderToString(<App />)).toContain('Flotilla');
  });
});
