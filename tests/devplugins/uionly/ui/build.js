// Stands in for `vite build`: writes dist/ (copied to the plugin's assets/).
const fs = require("fs");
fs.mkdirSync("dist", { recursive: true });
fs.writeFileSync("dist/index.js", "export const built = " + JSON.stringify(new Date().toISOString()) + ";\n");
console.log("built dist/index.js");
