// Drives a running ComfyUI's real frontend in headless Chromium (playwright-core, Debian's chromium).
//
//   node drive.mjs --url http://127.0.0.1:8188 --workflow wf.json --out result.json
//                  [--queue] [--timeout 600] [--screenshot shot.png] [--templates PACK]
//   node drive.mjs --url ... --timeout 1800 --batch jobs.json
//       (one page, the jobs [{workflow, out, queue, screenshot, timeout, templates}] one after
//       another, each job's result in its own file; --timeout bounds page start-up)
//
// Loads the page, waits for the app, loads the UI-format workflow with app.loadGraphData(), and
// writes one JSON object to --out:
//   frontend_version, http_errors (responses >= 400), missing_types (node types the frontend has no definition for),
//   dialogs (text of dialogs shown, e.g. the missing-nodes warning), page_errors, console_errors,
//   link_type_errors (links whose two ends have incompatible types), widgets (per node: the
//   widget names and values after loading), prompt (graphToPrompt().output);
//   with --queue: queue (the POST /prompt reply, or its rejection with the server's message),
//   history_status, previews (per output node: what the page shows);
//   with --templates PACK: templates (what /api/workflow_templates lists for PACK and whether each
//   one fetched from the template route loads cleanly).
// A rejected /prompt is reported at once (no waiting for /history). Exit code 0 whenever the
// result file was written; the test decides what is wrong. Exit 2: bad arguments; 3: no result.
import { readFileSync, writeFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

function parseArgs(argv) {
  const args = { queue: false, timeout: 600, executablePath: process.env.CHROMIUM || '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--url') args.url = next().replace(/\/+$/, '');
    else if (a === '--workflow') args.workflow = next();
    else if (a === '--out') args.out = next();
    else if (a === '--screenshot') args.screenshot = next();
    else if (a === '--queue') args.queue = true;
    else if (a === '--timeout') args.timeout = Number(next());
    else if (a === '--templates') args.templates = next();
    else if (a === '--batch') args.batch = next();
    else if (a === '--chromium') args.executablePath = next();
    else throw new Error(`unknown argument ${a}`);
  }
  if (!args.url || (!args.batch && (!args.out || (!args.workflow && !args.templates)))) {
    throw new Error('need --url and --batch, or --out with --workflow and/or --templates');
  }
  return args;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`drive.mjs: ${e.message}`);
    process.exit(2);
  }
  const started = Date.now();
  // One page, one or more workflows (--batch: a JSON list of {workflow, out, queue, screenshot,
  // timeout}), one after another; each gets its own result file.
  const jobs = args.batch ? JSON.parse(readFileSync(args.batch, 'utf8')) : [{
    workflow: args.workflow ?? null, out: args.out, queue: args.queue,
    screenshot: args.screenshot ?? null, timeout: args.timeout, templates: args.templates ?? null,
  }];
  let current = null; // the result the page's events are recorded into
  const newResult = (job) => ({
    url: args.url, workflow: job.workflow, page_errors: [], console_errors: [], dialogs: [],
    missing_types: [], link_type_errors: [], http_errors: [], timings: {},
  });
  let shared = newResult({ workflow: null }); // events before the first job
  current = shared;
  const pageDeadline = started + args.timeout * 1000;
  const left = (deadline) => Math.max(1000, deadline - Date.now());

  const browser = await chromium.launch({
    executablePath: args.executablePath, headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--use-gl=swiftshader',
      '--autoplay-policy=no-user-gesture-required', '--mute-audio'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    // The in-page helper (a plain function, shipped as source) on every document of the page.
    await page.addInitScript(`window.__segtalkerLoadAndInspect = ${pageLoadAndInspect.toString()};`);
    page.on('pageerror', (err) => current.page_errors.push(String(err && (err.stack || err.message) || err)));
    page.on('console', (msg) => {
      if (msg.type() === 'error') current.console_errors.push(msg.text());
    });
    // The /prompt reply, seen on the wire whatever the frontend does with it.
    let promptReply = null;
    page.on('response', async (resp) => {
      const u = new URL(resp.url());
      if (resp.status() >= 400) current.http_errors.push(`${resp.status()} ${resp.request().method()} ${u.pathname}${u.search}`);
      if (resp.request().method() === 'POST' && /\/(api\/)?prompt$/.test(u.pathname)) {
        let body = null;
        try { body = await resp.json(); } catch { try { body = await resp.text(); } catch { body = null; } }
        promptReply = { status: resp.status(), body };
      }
    });

    // No first-run template browser over the canvas.
    await fetch(`${args.url}/api/settings`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ 'Comfy.TutorialCompleted': true }),
    }).catch(() => {});

    await page.goto(`${args.url}/`, { waitUntil: 'domcontentloaded', timeout: left(pageDeadline) });
    await page.waitForFunction(() => {
      const LG = window.LiteGraph ?? window.comfyAPI?.litegraph?.LiteGraph;
      return !!(window.app && window.app.graph && window.app.canvas && LG
        && LG.registered_node_types && LG.registered_node_types.LoadImage);
    }, null, { timeout: Math.min(left(pageDeadline), 120000), polling: 250 });
    const frontendVersion = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
    const appReady = (Date.now() - started) / 1000;
    // Let the default graph and start-up dialogs settle, then close whatever start-up opened.
    await sleep(500);
    await closeDialogs(page);

    for (const job of jobs) {
      const result = newResult(job);
      // What the page logged before (start-up) belongs to the first job.
      if (shared) {
        for (const k of ['page_errors', 'console_errors', 'http_errors']) result[k].push(...shared[k]);
        shared = null;
      }
      current = result;
      result.frontend_version = frontendVersion;
      result.timings.app_ready = appReady;
      const jobStart = Date.now();
      const deadline = jobStart + (job.timeout ?? args.timeout) * 1000;
      const mark = (what) => { result.timings[what] = (Date.now() - jobStart) / 1000; };
      const write = () => writeFileSync(job.out, JSON.stringify(result, null, 1));
      try {
        if (job.templates) {
          result.templates = await checkTemplates(page, args.url, job.templates);
          mark('templates');
        }
        if (job.workflow) {
          const workflow = JSON.parse(readFileSync(job.workflow, 'utf8'));
          await closeDialogs(page);
          const loaded = await page.evaluate((wf) => window.__segtalkerLoadAndInspect(wf), workflow);
          Object.assign(result, loaded);
          result.dialogs = await dialogTexts(page);
          // The missing-nodes warning may come a moment after loading.
          for (let i = 0; i < 20 && result.missing_types?.length
            && !result.dialogs.some((d) => result.missing_types.some((t) => d.includes(t))); i++) {
            await sleep(150);
            result.dialogs = await dialogTexts(page);
          }
          mark('loaded');
          write();
          if (job.queue && !result.convert_error) {
            await closeDialogs(page);
            promptReply = null;
            const queued = await page.evaluate(async () => {
              try {
                const r = await window.app.queuePrompt(0, 1);
                return { returned: r === undefined ? null : r };
              } catch (e) {
                return { threw: String(e && (e.message || e)) };
              }
            });
            // The reply to POST /prompt arrives before queuePrompt resolves; wait a little if not.
            for (let i = 0; i < 50 && !promptReply; i++) await sleep(100);
            result.queue = { ...queued, reply: promptReply };
            mark('queued');
            if (!promptReply) {
              result.queue.error = 'the page sent no POST /prompt';
            } else if (promptReply.status !== 200 || !promptReply.body?.prompt_id) {
              // Fail fast: the server's own message, no waiting for /history.
              result.queue.error = `POST /prompt rejected (HTTP ${promptReply.status}): `
                + JSON.stringify(promptReply.body);
            } else {
              const id = promptReply.body.prompt_id;
              result.prompt_id = id;
              result.history_status = await waitForHistory(args.url, id, deadline);
              mark('finished');
              if (result.history_status?.status_str === 'success') {
                result.history_outputs_nodes = await outputNodes(args.url, id);
                result.previews = await waitForPreviews(page, result.history_outputs_nodes);
                mark('previews');
              } else if (result.history_status?.status_str === 'timeout') {
                // Free the worker for whatever comes next.
                await fetch(`${args.url}/api/interrupt`, { method: 'POST' }).catch(() => {});
              }
            }
          }
        }
        if (job.screenshot) {
          await page.evaluate(() => window.app?.graph?.setDirtyCanvas?.(true, true));
          await sleep(300);
          await page.screenshot({ path: job.screenshot });
        }
      } catch (e) {
        result.driver_error = String(e && (e.stack || e.message) || e);
      }
      mark('done');
      write();
    }
  } finally {
    await browser.close();
  }
}

// Everything that runs inside the page is a plain function (serialized by playwright).
async function pageLoadAndInspect(wf) {
  const app = window.app;
  const LG = window.LiteGraph ?? window.comfyAPI?.litegraph?.LiteGraph;
  const out = {};
  try {
    await app.loadGraphData(wf, true, true, null);
  } catch (e) {
    out.load_error = String(e && (e.stack || e.message) || e);
  }
  await new Promise((r) => setTimeout(r, 300));
  const graph = app.graph;
  const nodes = graph._nodes ?? graph.nodes ?? [];
  out.node_count = nodes.length;
  out.missing_types = [...new Set(nodes.filter((n) => !LG.registered_node_types[n.type])
    .map((n) => n.type))].sort();
  out.nodes_with_errors = nodes.filter((n) => n.has_errors).map((n) => `${n.id}:${n.type}`);
  out.widgets = {};
  for (const n of nodes) {
    out.widgets[String(n.id)] = {
      type: n.type,
      widgets: (n.widgets ?? []).map((w) => ({ name: w.name, type: w.type, value: w.value })),
    };
  }
  // Links whose ends disagree on the type (a socket type changed under a saved workflow).
  const links = graph.links instanceof Map ? [...graph.links.values()]
    : Object.values(graph.links ?? {});
  out.link_type_errors = [];
  for (const l of links) {
    if (!l) continue;
    const from = graph.getNodeById(l.origin_id);
    const to = graph.getNodeById(l.target_id);
    const outT = from?.outputs?.[l.origin_slot]?.type;
    const inT = to?.inputs?.[l.target_slot]?.type;
    const ok = outT !== undefined && inT !== undefined && (LG.isValidConnection
      ? LG.isValidConnection(outT, inT) : outT === inT || outT === '*' || inT === '*');
    if (!ok) {
      out.link_type_errors.push(`link ${l.id}: ${from?.type ?? '?'}#${l.origin_id}[${l.origin_slot}] `
        + `${outT} -> ${to?.type ?? '?'}#${l.target_id}[${l.target_slot}] ${inT}`);
    }
  }
  try {
    const p = await app.graphToPrompt();
    out.prompt = p.output;
  } catch (e) {
    out.convert_error = String(e && (e.stack || e.message) || e);
  }
  try {
    const canvas = app.canvas;
    if (canvas?.ds && nodes.length) {
      // Whole graph in view for the screenshot.
      let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity;
      for (const n of nodes) {
        x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 40);
        x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
      }
      const el = canvas.canvas;
      const w = el.clientWidth || el.width; const h = el.clientHeight || el.height;
      const scale = Math.min(1, 0.92 * w / (x1 - x0), 0.9 * h / (y1 - y0));
      canvas.ds.scale = scale;
      canvas.ds.offset = [(w / scale - (x1 - x0)) / 2 - x0, (h / scale - (y1 - y0)) / 2 - y0];
      canvas.setDirty(true, true);
    }
  } catch { /* cosmetic only */ }
  return out;
}

async function dialogTexts(page) {
  // Dialogs (missing-nodes warning of older frontends) and toasts / alerts (newer ones).
  return page.evaluate(() => [...document.querySelectorAll(
    '[role="dialog"], .p-dialog, .comfy-modal, .p-toast-message, [role="alert"], [role="status"]')]
    .filter((d) => d.offsetParent !== null || getComputedStyle(d).display !== 'none')
    .map((d) => (d.innerText || '').trim().slice(0, 2000)).filter(Boolean));
}

async function closeDialogs(page) {
  for (let i = 0; i < 3; i++) {
    const n = await page.evaluate(() => document.querySelectorAll('[role="dialog"], .p-dialog').length);
    if (!n) return;
    await page.keyboard.press('Escape').catch(() => {});
    await sleep(200);
  }
}

async function waitForHistory(url, id, deadline) {
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`${url}/api/history/${encodeURIComponent(id)}`);
      const h = await r.json();
      const entry = h?.[id];
      const st = entry?.status;
      if (entry && (st?.completed || st?.status_str === 'error')) return st;
    } catch { /* server busy */ }
    await sleep(500);
  }
  return { status_str: 'timeout', completed: false };
}

async function outputNodes(url, id) {
  const h = await (await fetch(`${url}/api/history/${encodeURIComponent(id)}`)).json();
  const outs = h?.[id]?.outputs ?? {};
  const res = {};
  for (const [nid, o] of Object.entries(outs)) {
    const files = [];
    for (const [key, items] of Object.entries(o)) {
      if (!Array.isArray(items)) continue;
      for (const it of items) if (it && typeof it === 'object' && it.filename) files.push({ key, ...it });
    }
    if (files.length) res[nid] = files;
  }
  return res;
}

// Per output node: loaded <img> (node.imgs, drawn on the canvas) or a playing <video> element.
async function waitForPreviews(page, nodes, ms = 20000) {
  const end = Date.now() + ms;
  let last = {};
  while (Date.now() < end) {
    last = await page.evaluate((ids) => {
      const res = {};
      for (const id of ids) {
        const node = window.app.graph.getNodeById(Number(id)) ?? window.app.graph.getNodeById(id);
        const info = { images: 0, videos: 0 };
        for (const img of node?.imgs ?? []) {
          if (img && img.complete && img.naturalWidth > 0) info.images++;
        }
        const els = [];
        for (const w of node?.widgets ?? []) if (w?.element) els.push(w.element);
        if (node?.videoContainer) els.push(node.videoContainer);
        const videos = new Set();
        for (const el of els) {
          if (el.tagName === 'VIDEO') videos.add(el);
          el.querySelectorAll?.('video').forEach((v) => videos.add(v));
        }
        // Frontends that render previews as DOM (Vue nodes): videos whose src names this node's output.
        document.querySelectorAll('video').forEach((v) => {
          const holder = v.closest('[data-node-id]');
          if (holder && holder.getAttribute('data-node-id') === String(id)) videos.add(v);
        });
        for (const v of videos) if (v.videoWidth > 0) info.videos++;
        document.querySelectorAll('[data-node-id] img').forEach((im) => {
          if (im.closest('[data-node-id]').getAttribute('data-node-id') === String(id)
              && im.complete && im.naturalWidth > 0) info.images++;
        });
        res[id] = info;
      }
      return res;
    }, Object.keys(nodes));
    if (Object.values(last).every((v) => v.images + v.videos > 0)) break;
    await sleep(250);
  }
  for (const [id, files] of Object.entries(nodes)) last[id] = { ...last[id], files: files.map((f) => f.filename) };
  return last;
}

async function checkTemplates(page, url, pack) {
  const out = { listing: null, loads: {}, ui: null };
  const r = await fetch(`${url}/api/workflow_templates`);
  out.listing_status = r.status;
  out.listing = await r.json().catch(() => null);
  const expected = {};
  // Each template as the template route serves it, loaded into the graph.
  for (const name of (out.listing?.[pack] ?? [])) {
    const tr = await fetch(`${url}/api/workflow_templates/${encodeURIComponent(pack)}/${encodeURIComponent(name)}.json`);
    const entry = { status: tr.status };
    if (tr.status === 200) {
      const wf = await tr.json();
      expected[name] = (wf.nodes ?? []).map((n) => n.type).sort();
      Object.assign(entry, await page.evaluate(async (w) => {
        const r2 = await window.__segtalkerLoadAndInspect(w);
        return { missing_types: r2.missing_types, node_count: r2.node_count, load_error: r2.load_error,
          convert_error: r2.convert_error, prompt_nodes: r2.prompt ? Object.keys(r2.prompt).length : 0 };
      }, wf));
    }
    out.loads[name] = entry;
  }
  out.ui = await templateDialog(page, pack, expected).catch((e) => ({ error: String(e && (e.stack || e.message) || e) }));
  return out;
}

// The frontend's own template browser: the pack's category, its cards (with a loaded thumbnail),
// and each card opened by a click.
async function templateDialog(page, pack, expected) {
  const ui = { cards: [], thumbnails: {}, opened: {} };
  const open = async () => {
    await closeDialogs(page);
    await page.evaluate(() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates'));
    const dlg = page.locator('[role="dialog"]').first();
    await dlg.getByText(pack, { exact: true }).first().click({ timeout: 20000 });
    await page.locator('[role="dialog"] [data-testid^="template-workflow-"]').first()
      .waitFor({ timeout: 20000 });
    return dlg;
  };
  await open();
  await sleep(500);
  ui.cards = await page.locator('[role="dialog"] [data-testid^="template-workflow-"]')
    .evaluateAll((els) => els.map((e) => e.getAttribute('data-testid').replace('template-workflow-', '')));
  // The dialog loads a card's thumbnail only while the card is in view (and may drop it again
  // when scrolled away): each round scrolls the first card not yet seen with a loaded thumbnail
  // into view, and a card counts once it has shown one, within 30 s.
  for (const name of ui.cards) ui.thumbnails[name] = 0;
  const end = Date.now() + 30000;
  while (Date.now() < end) {
    const seen = await page.evaluate((pending) => {
      const res = {};
      document.querySelectorAll('[role="dialog"] [data-testid^="template-workflow-"]').forEach((card) => {
        const name = card.getAttribute('data-testid').replace('template-workflow-', '');
        const imgs = [...card.querySelectorAll('img')];
        res[name] = imgs.length ? Math.max(...imgs.map((i) => (i.complete ? i.naturalWidth : 0))) : 0;
      });
      const next = pending.find((name) => !res[name]);
      const card = next && document.querySelector(`[role="dialog"] [data-testid="template-workflow-${next}"]`);
      if (card) card.scrollIntoView({ block: 'nearest' });
      return res;
    }, Object.keys(ui.thumbnails).filter((name) => !ui.thumbnails[name]));
    for (const [name, width] of Object.entries(seen)) {
      ui.thumbnails[name] = Math.max(ui.thumbnails[name] ?? 0, width);
    }
    if (Object.values(ui.thumbnails).every((w) => w > 0)) break;
    await sleep(250);
  }
  // A click can land while the dialog is still animating in (seen under load in CI: the graph
  // kept the previous template), so a card gets up to three clicks, each in a freshly opened
  // dialog; the entry records how many it took.
  const graphTypes = () => page.evaluate(() => {
    const LG = window.LiteGraph ?? window.comfyAPI?.litegraph?.LiteGraph;
    const nodes = window.app.graph._nodes ?? window.app.graph.nodes ?? [];
    return { node_count: nodes.length, types: nodes.map((n) => n.type).sort(),
      missing_types: [...new Set(nodes.filter((n) => !LG.registered_node_types[n.type]).map((n) => n.type))] };
  });
  for (const name of ui.cards) {
    const entry = {};
    const want = expected[name];
    entry.expected_types = want ?? null;
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        await open();
        await page.locator(`[role="dialog"] [data-testid="template-workflow-${name}"]`).first().click({ timeout: 20000 });
        // Opened: the graph holds the template's nodes, all of known types.
        await page.waitForFunction((types) => JSON.stringify((window.app.graph._nodes ?? window.app.graph.nodes ?? [])
          .map((n) => n.type).sort()) === JSON.stringify(types), want ?? [], { timeout: 20000, polling: 200 })
          .catch(() => {});
        Object.assign(entry, await graphTypes());
        delete entry.error;
      } catch (e) {
        entry.error = String(e && (e.message || e));
      }
      entry.attempts = attempt;
      entry.matches = !entry.error && JSON.stringify(entry.types) === JSON.stringify(want ?? null);
      if (entry.matches) break;
    }
    ui.opened[name] = entry;
  }
  await closeDialogs(page);
  return ui;
}

main().catch((e) => {
  console.error(`drive.mjs: ${e && (e.stack || e.message) || e}`);
  process.exit(3);
});
