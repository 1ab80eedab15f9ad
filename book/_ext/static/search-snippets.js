/* Snippets under the hits of the search page (book/_ext/navigation.py explains why).
 *
 * Each hit links to a page (and maybe a section of it). The page's prose was written at build
 * time to _static/search-text/<page>.js, which calls DDPM_SEARCH_TEXT.add(page, prose) with
 * prose = [[paragraph, [section ids, outermost first]], ...]. Under the hit goes the first
 * sentence of the section's prose that holds a search word (and the next ones, to about
 * SNIPPET_LENGTH characters), with the search words highlighted and its math typeset.
 */
"use strict";

const SNIPPET_LENGTH = 240; // characters of text shown under a hit, about
const SHORT_PARAGRAPH = 60; // characters: shorter is a title or a link line, not prose
const MATH = /(\\\(.*?\\\))/s; // inline math as the page text holds it
const SENTENCE_END = /(?<=[.!?])\s+/;

window.DDPM_SEARCH_TEXT = (() => {
  const root = document.documentElement.dataset.content_root || "";
  const pending = new Map(); // page -> resolve of its prose
  const loaded = new Map(); // page -> promise of its prose
  return {
    add(page, prose) {
      const resolve = pending.get(page);
      if (resolve) resolve(prose);
    },
    prose(page) {
      if (!loaded.has(page)) {
        loaded.set(
          page,
          new Promise((resolve) => {
            pending.set(page, resolve);
            const script = document.createElement("script");
            script.src = `${root}_static/search-text/${page}.js`;
            script.onerror = () => resolve([]);
            document.head.appendChild(script);
          }),
        );
      }
      return loaded.get(page);
    },
  };
})();

/* The words searched for, lower case: as typed, and as Sphinx's index stems them. */
function searchWords() {
  const query = new URLSearchParams(window.location.search).get("q") || "";
  const stemmer = typeof Stemmer === "undefined" ? null : new Stemmer();
  const ignored = new Set(typeof stopwords === "undefined" ? [] : stopwords);
  const words = new Set();
  for (const word of splitQuery(query.toLowerCase())) {
    if (word.startsWith("-") || ignored.has(word)) continue;
    words.add(word);
    if (stemmer) words.add(stemmer.stemWord(word));
  }
  return [...words].filter((word) => word.length > 1);
}

/* Sentences of a paragraph; each a list of pieces, text or math ("\(...\)"), never cut in math. */
function sentences(paragraph) {
  const found = [[]];
  for (const piece of paragraph.split(MATH)) {
    if (MATH.test(piece)) {
      found[found.length - 1].push(piece);
      continue;
    }
    piece.split(SENTENCE_END).forEach((part, index) => {
      if (index > 0) found.push([]);
      if (part) found[found.length - 1].push(part);
    });
  }
  return found.filter((sentence) => sentence.length);
}

const plain = (pieces) => pieces.filter((piece) => !MATH.test(piece)).join("").toLowerCase();
const length = (pieces) => pieces.join("").length;

/* The snippet, as pieces: the first sentence with a search word and what follows it, or else
 * (the words are in code or a title only) the section's opening sentences. */
function snippet(prose, section, words) {
  const inSection = prose.filter(([, sections]) => sections.includes(section));
  const chosen = inSection.length ? inSection : prose;
  const paragraphs = chosen.map(([paragraph]) => sentences(paragraph));
  const hasWord = (sentence) => words.some((word) => plain(sentence).includes(word));
  // a heading-like line (a link to the next page, a list item) says little: prefer a paragraph
  const withWord = paragraphs.filter((paragraph) => paragraph.some(hasWord));
  const all =
    withWord.find((paragraph) => length(paragraph.flat()) >= SHORT_PARAGRAPH) ||
    withWord[0] ||
    paragraphs[0];
  if (!all) return null;
  const first = Math.max(all.findIndex(hasWord), 0);
  let last = first;
  while (last + 1 < all.length && length(all.slice(first, last + 1).flat()) < SNIPPET_LENGTH) {
    last += 1;
  }
  const shown = all.slice(first, last + 1);
  const pieces = shown.flatMap((sentence, i) => (i ? [" ", ...sentence] : sentence));
  return [...(first > 0 ? ["… "] : []), ...pieces, ...(last + 1 < all.length ? [" …"] : [])];
}

/* A text node, with the search words in it highlighted as Sphinx highlights them. */
function highlighted(text, words) {
  const escaped = words.map((word) => word.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const fragment = document.createDocumentFragment();
  text.split(new RegExp(`(${escaped.join("|")})`, "i")).forEach((part, index) => {
    if (index % 2) {
      const mark = fragment.appendChild(document.createElement("span"));
      mark.className = "highlighted";
      mark.textContent = part;
    } else if (part) {
      fragment.appendChild(document.createTextNode(part));
    }
  });
  return fragment;
}

function typeset(element) {
  const mathjax = window.MathJax;
  if (mathjax && mathjax.startup && mathjax.startup.promise) {
    mathjax.startup.promise.then(() => mathjax.typesetPromise([element]));
  } else {
    window.addEventListener("load", () => typeset(element), { once: true });
  }
}

async function addSnippet(hit, words) {
  const link = hit.querySelector("a");
  if (!link || hit.querySelector(".ddpm-snippet")) return;
  const [target, section] = link.getAttribute("href").split("#");
  const prose = await DDPM_SEARCH_TEXT.prose(target.replace(/\.html$/, ""));
  const pieces = words.length ? snippet(prose, section, words) : null;
  if (!pieces) return;
  const paragraph = document.createElement("p");
  paragraph.className = "context ddpm-snippet";
  for (const piece of pieces) {
    if (MATH.test(piece)) {
      const math = paragraph.appendChild(document.createElement("span"));
      math.className = "math";
      math.textContent = piece;
    } else {
      paragraph.appendChild(highlighted(piece, words));
    }
  }
  hit.appendChild(paragraph);
  typeset(paragraph);
}

document.addEventListener("DOMContentLoaded", () => {
  const results = document.getElementById("search-results");
  if (!results) return;
  const words = searchWords();
  results.querySelectorAll("ul.search > li").forEach((hit) => addSnippet(hit, words));
  new MutationObserver((changes) => {
    for (const change of changes) {
      for (const node of change.addedNodes) {
        if (node.nodeName === "LI" && node.parentElement.matches("ul.search")) {
          addSnippet(node, words);
        }
      }
    }
  }).observe(results, { childList: true, subtree: true });
});
