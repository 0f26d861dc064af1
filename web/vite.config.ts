import { defineConfig } from "vitest/config";

// The gateway serves dist/ at / (gateway.web_dir) with /assets/* cached as immutable:
// Vite puts content-hashed names there. `npm run dev` proxies the API to a local gateway.
export default defineConfig({
  build: {
    outDir: "dist",
    assetsDir: "assets",
    target: "es2022",
    // One small bundle: no code splitting needed below the 150 KB budget.
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
  server: {
    proxy: { "/graphql": { target: "http://127.0.0.1:8080", ws: true } },
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
  },
});
