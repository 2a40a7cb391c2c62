import { defineConfig } from 'vitest/config';

// The Python server (`escenario serve`, default 127.0.0.1:8000) serves the built
// `dist/` at `/`, the JSON API under `/api` and the Yjs sync socket under `/sync`.
// In development, Vite serves the page and forwards those two prefixes to it
// (Host/Origin are left as the page's, so same-origin checks behave as in production).
const backend = 'http://127.0.0.1:8000';

export default defineConfig({
  base: '/',
  server: {
    host: '127.0.0.1',
    port: 5173,
    proxy: {
      '/api': { target: backend },
      '/sync': { target: backend, ws: true },
      '/jam': { target: backend, ws: true },
    },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
  },
  test: {
    environment: 'node',
    include: ['src/**/*.test.ts'],
  },
});
