// A small, safe Markdown renderer for plugin readmes.
//
// The text is HTML-escaped first, so nothing in it can become markup; only the
// constructs below are turned into tags: headings, paragraphs, lists, block
// quotes, rules, fenced and inline code, emphasis and links. Link targets are
// limited to http(s) and relative URLs; images become plain links.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

// `url` is already escaped; it is used as written or not at all. Browsers drop
// tabs and newlines inside URLs (`java\tscript:`), so a URL holding any control
// character or space is refused rather than cleaned.
export function safeUrl(url) {
  if (/[\u0000-\u0020\u007f]/.test(url)) return null;
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url);
  if (scheme && !["http", "https"].includes(scheme[1].toLowerCase())) return null;
  return url;
}

// Finished markup is set aside behind a placeholder (NUL, index, NUL) so later
// rules leave it alone; `source` keeps the text it replaced.
function inline(escaped) {
  const saved = [];
  const keep = (html, source) => `\u0000${saved.push({ html, source }) - 1}\u0000`;
  const PLACEHOLDER = /\u0000(\d+)\u0000/g;
  let s = escaped.replace(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g, (whole, _ticks, code) =>
    keep(`<code>${code.trim()}</code>`, whole),
  );
  s = s.replace(/!?\[([^\]\n]*)\]\(([^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+&quot;[^\n]*?&quot;)?\)/g,
    (_, label, target) => {
      // A link's target is its text as written, code spans and all.
      const url = target.replace(PLACEHOLDER, (__, i) => saved[Number(i)].source);
      const text = label.replace(PLACEHOLDER, (__, i) => saved[Number(i)].html);
      const href = safeUrl(url);
      if (href === null) return text;
      return keep(
        `<a href="${href}" target="_blank" rel="noopener noreferrer">${text || href}</a>`,
      );
    });
  s = s.replace(/&lt;(https?:\/\/[^\s&]+)&gt;/g, (_, url) =>
    keep(`<a href="${url}" target="_blank" rel="noopener noreferrer">${url}</a>`));
  s = s.replace(/(\*\*|__)(?=\S)([\s\S]*?\S)\1/g, "<strong>$2</strong>");
  s = s.replace(/(^|[^\w*])\*(?=\S)([^*\n]*?\S)\*(?!\w)/g, "$1<em>$2</em>");
  s = s.replace(/(^|[^\w])_(?=\S)([^_\n]*?\S)_(?!\w)/g, "$1<em>$2</em>");
  return s.replace(PLACEHOLDER, (_, i) => saved[Number(i)].html);
}

const RULE = /^ {0,3}([-*_])( *\1){2,} *$/;
const HEADING = /^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$/;
const FENCE = /^ {0,3}(```+|~~~+)\s*([\w+-]*)/;
const BULLET = /^ {0,3}[-*+][ \t]+(.*)$/;
const ORDERED = /^ {0,3}(\d{1,9})[.)][ \t]+(.*)$/;
const QUOTE = /^ {0,3}&gt; ?(.*)$/;

function isBlockStart(line) {
  return HEADING.test(line) || FENCE.test(line) || BULLET.test(line) || ORDERED.test(line) ||
    QUOTE.test(line) || RULE.test(line);
}

export function renderMarkdown(source) {
  const lines = escapeHtml(String(source ?? "").replace(/\u0000/g, ""))
    .replace(/\r\n?/g, "\n")
    .split("\n");
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    let m;
    if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const lang = m[2] ? ` class="language-${m[2]}"` : "";
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trimStart().startsWith(fence)) body.push(lines[i++]);
      i += 1; // the closing fence
      out.push(`<pre><code${lang}>${body.join("\n")}</code></pre>`);
    } else if ((m = HEADING.exec(line))) {
      const level = m[1].length;
      out.push(`<h${level}>${inline(m[2])}</h${level}>`);
      i += 1;
    } else if (RULE.test(line)) {
      out.push("<hr>");
      i += 1;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        body.push(m[1]);
        i += 1;
      }
      out.push(`<blockquote>${renderQuoted(body)}</blockquote>`);
    } else if (BULLET.test(line) || ORDERED.test(line)) {
      const ordered = !BULLET.test(line);
      const pattern = ordered ? ORDERED : BULLET;
      const start = ordered ? Number(ORDERED.exec(line)[1]) : 1;
      const items = [];
      while (i < lines.length) {
        const item = pattern.exec(lines[i]);
        if (item) {
          items.push(ordered ? item[2] : item[1]);
        } else if (items.length && lines[i].trim() && /^\s{2,}/.test(lines[i])) {
          items[items.length - 1] += ` ${lines[i].trim()}`; // a continuation line
        } else {
          break;
        }
        i += 1;
      }
      const tag = ordered ? "ol" : "ul";
      const from = ordered && start !== 1 ? ` start="${start}"` : "";
      out.push(`<${tag}${from}>${items.map((t) => `<li>${inline(t)}</li>`).join("")}</${tag}>`);
    } else {
      const para = [];
      while (i < lines.length && lines[i].trim() && !(para.length && isBlockStart(lines[i]))) {
        para.push(lines[i].trim());
        i += 1;
      }
      out.push(`<p>${inline(para.join(" "))}</p>`);
    }
  }
  return out.join("\n");
}

// Block quotes hold already-escaped text: render it without escaping twice.
function renderQuoted(lines) {
  return lines
    .join("\n")
    .split(/\n\s*\n/)
    .filter((p) => p.trim())
    .map((p) => `<p>${inline(p.replace(/\n/g, " "))}</p>`)
    .join("");
}
