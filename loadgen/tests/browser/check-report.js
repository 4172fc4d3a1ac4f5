#!/usr/bin/env node
// Loads a REPORT.html in headless Chromium (Debian's /usr/bin/chromium, or $CHROMIUM) and prints
// what it found as one JSON line: console errors, requests, each chart's size, the summary table
// sorted by a click, the page at phone width, and a printed PDF. loadgen/tests/report_html.rs
// asserts on it.
//
// usage: node check-report.js FILE_URL [--expect TEXT] [--shots DIR]
//   --expect TEXT  also report whether the page's visible text contains TEXT
//   --shots DIR    save screenshots (desktop and phone, each chart) and the PDF into DIR
"use strict";

const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

// Without the background-networking flags Chromium opens connections a closed network refuses.
const FLAGS = [
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

function parseArgs(argv) {
  const args = { url: argv[0], expect: null, shots: null };
  for (let i = 1; i < argv.length; i += 2) {
    if (argv[i] === "--expect") args.expect = argv[i + 1];
    else if (argv[i] === "--shots") args.shots = argv[i + 1];
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  if (!args.url) throw new Error("usage: check-report.js FILE_URL [--expect TEXT] [--shots DIR]");
  return args;
}

// Clicks the summary table's `column` header twice; returns its values before and after each.
async function sortByClicks(page, column) {
  const table = "#summary-table table.sortable";
  const headers = await page.$$eval(`${table} thead th`, (ths) =>
    ths.map((th) => th.textContent.trim()),
  );
  const headerIndex = headers.indexOf(column);
  if (headerIndex < 0) return { column, headers, error: "no such column" };
  const values = () =>
    page.$$eval(
      `${table} tbody tr`,
      (rows, index) =>
        rows.map((row) => {
          const key = row.cells[index].getAttribute("data-sort");
          return key === null ? null : Number(key);
        }),
      headerIndex,
    );
  const header = page.locator(`${table} thead th`).nth(headerIndex);
  const click = async () => {
    await header.locator('[role="button"]').click();
    return { values: await values(), aria: await header.getAttribute("aria-sort") };
  };
  const before = await values();
  const ascending = await click();
  const descending = await click();
  return {
    column,
    before,
    ascending: ascending.values,
    descending: descending.values,
    ariaAscending: ascending.aria,
    ariaDescending: descending.aria,
  };
}

// Sorts the summary table by `column` from the keyboard (focus, Enter); returns its values.
async function sortByKeyboard(page, column) {
  const table = "#summary-table table.sortable";
  const header = page.locator(`${table} thead th`, { hasText: new RegExp(`^${column}$`) });
  await header.locator('[role="button"]').focus();
  await page.keyboard.press("Enter");
  const index = await header.evaluate((th) => th.cellIndex);
  return page.$$eval(
    `${table} tbody tr`,
    (rows, i) => rows.map((row) => Number(row.cells[i].getAttribute("data-sort"))),
    index,
  );
}

// Whether the pointer hits the hover layer (not the drawing under it) at each chart's first hover
// area.
async function hoverTargets(page) {
  return page.$$eval("figure.chart", (figures) =>
    figures.map((figure) => {
      const tip = figure.querySelector(".tips .tip");
      if (!tip) return false;
      tip.scrollIntoView({ block: "center" });
      const box = tip.getBoundingClientRect();
      const hit = document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
      // Another hover area may lie over this one (two curves meet); either shows a title.
      return hit !== null && hit.classList.contains("tip") && figure.contains(hit);
    }),
  );
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: FLAGS,
    timeout: 60_000,
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const consoleErrors = [];
    const requests = [];
    page.on("console", (message) => {
      if (message.type() === "error" || message.type() === "warning") {
        consoleErrors.push(`${message.type()}: ${message.text()}`);
      }
    });
    page.on("pageerror", (error) => consoleErrors.push(`pageerror: ${error.message}`));
    page.on("request", (request) => requests.push(request.url()));
    await page.goto(args.url, { waitUntil: "load", timeout: 60_000 });

    const charts = await page.$$eval("figure.chart", (figures) =>
      figures.map((figure) => {
        const svg = figure.querySelector("svg");
        const box = svg ? svg.getBoundingClientRect() : { width: 0, height: 0 };
        return {
          id: figure.id,
          width: box.width,
          height: box.height,
          texts: svg ? svg.querySelectorAll("text").length : 0,
          tips: svg ? svg.querySelectorAll(".tips title").length : 0,
        };
      }),
    );
    const injected = await page.evaluate(() =>
      window.__injected === undefined ? null : String(window.__injected),
    );
    const found = args.expect === null
      ? null
      : await page.evaluate((text) => document.body.innerText.includes(text), args.expect);
    const sections = await page.$$eval("main > section", (all) => all.map((s) => s.id));
    if (args.shots) {
      fs.mkdirSync(args.shots, { recursive: true });
      await page.screenshot({ path: path.join(args.shots, "desktop.png"), fullPage: true });
      for (const chart of charts) {
        await page
          .locator(`#${chart.id}`)
          .screenshot({ path: path.join(args.shots, `desktop-${chart.id}.png`) });
      }
    }
    const hoverable = await hoverTargets(page);
    const sort = await sortByClicks(page, "p99 ms");
    const keyboardSort = await sortByKeyboard(page, "clients");

    await page.setViewportSize({ width: 390, height: 844 });
    const phone = await page.evaluate(() => ({
      pageWidth: document.documentElement.scrollWidth,
      viewportWidth: document.documentElement.clientWidth,
      chartBoxes: [...document.querySelectorAll("figure.chart .chart-box")].map(
        (box) => box.getBoundingClientRect().width,
      ),
    }));
    if (args.shots) {
      await page.screenshot({ path: path.join(args.shots, "phone.png"), fullPage: true });
      await page
        .locator("figure.chart")
        .first()
        .screenshot({ path: path.join(args.shots, "phone-chart.png") });
    }

    await page.emulateMedia({ media: "print" });
    const pdf = await page.pdf({ format: "A4", printBackground: true });
    if (args.shots) fs.writeFileSync(path.join(args.shots, "report.pdf"), pdf);

    console.log(
      JSON.stringify({
        title: await page.title(),
        consoleErrors,
        requests,
        sections,
        charts,
        hoverable,
        injected,
        found,
        sort,
        keyboardSort,
        phone,
        pdfBytes: pdf.length,
        pdfPages: (pdf.toString("latin1").match(/\/Type\s*\/Page[^s]/g) || []).length,
      }),
    );
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
