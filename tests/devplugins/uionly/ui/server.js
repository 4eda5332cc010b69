// Stands in for `vite`: answers HTTP on $PORT (or --port N) until stopped.
const port = Number(process.env.PORT || process.argv[process.argv.indexOf("--port") + 1]);
require("http").createServer((req, res) => res.end("ok")).listen(port, "127.0.0.1", () => {
  console.log(`ready on http://localhost:${port}`);
});
