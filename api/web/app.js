/* Semrec Market: the storefront and merchandiser console of semrec.
 *
 * Plain JavaScript, no build step, no external assets: every request goes to the API that served
 * this page. Views are chosen by the URL hash:
 *   #/                   home: onboarding for a new visitor, the personal feed with a reason per item
 *   #/search?q=…         search results, "also searching" terms from the response's expansion
 *   #/c/<category>       a category, ordered for the current shopper
 *   #/item/<id>          product page: similar items, frequently bought together, customers also bought,
 *                        recently viewed, rating
 *   #/console[/<user>]   console: shoppers, history, sources, A/B variants side by side, report plots
 *   #/merch              merchandising: the rule editor, a preview of any placement, the audit trail
 * Every click on a product is sent to POST /events with the request_id of the list it came from.
 * A shopper's personal routes (their feed, history, onboarding, their events) carry that shopper's
 * token (X-Shopper-Token). A real shop's backend signs it at login and hands it to the page; under
 * `semrec demo` the demo-only POST /demo/token stands in for that backend.
 */
"use strict";

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const main = $("#main");
  const enc = encodeURIComponent;

  // ---- storage, ids ----------------------------------------------------------------------------
  const KEY = { user: "semrec.user", apiKey: "semrec.apiKey", recent: "semrec.recent.", onboard: "semrec.onboard." };
  const saved = {
    get(k, fallback) {
      try { const v = localStorage.getItem(k); return v === null ? fallback : JSON.parse(v); } catch { return fallback; }
    },
    set(k, v) { try { localStorage.setItem(k, JSON.stringify(v)); } catch { /* private mode: keep going */ } },
  };

  function randomId(n = 12) {
    const bytes = new Uint8Array(n);
    (window.crypto || {}).getRandomValues ? crypto.getRandomValues(bytes)
      : bytes.forEach((_, i) => { bytes[i] = Math.floor(Math.random() * 256); });
    return Array.from(bytes, (b) => (b % 36).toString(36)).join("");
  }
  const newVisitorId = () => "visitor-" + randomId(6);

  const state = {
    user: saved.get(KEY.user, null) || newVisitorId(),
    categories: [],
    ratings: new Map(),        // item id -> {average, count, stars} | null (no ratings)
    feeds: new Map(),          // user -> item ids of the feed shown last
    pending: Promise.resolve(),// events in flight: a feed waits for them
    arrivedByClick: null,      // item id whose card was just clicked (no separate "view" event)
    token: 0,
    variants: null,
    shoppers: null,
  };
  saved.set(KEY.user, state.user);

  // ---- HTML helpers ----------------------------------------------------------------------------
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ESC[c]);
  const money = (p) => (p == null ? "" : "$" + Number(p).toFixed(2));
  // Attribute keys as a shopper reads them: "main_category" -> "Main category", "salesRank" -> "Sales rank".
  const KEY_NAMES = { main_cat: "Main category", main_category: "Main category", tech1: "Technical details",
    tech2: "More technical details" };
  function humanKey(key) {
    const k = String(key).trim().replace(/:$/, "");
    if (KEY_NAMES[k.toLowerCase()]) return KEY_NAMES[k.toLowerCase()];
    const words = k.replace(/([a-z])([A-Z])/g, "$1 $2").replace(/[_\s]+/g, " ").trim().split(" ");
    const text = words.map((w, i) => (i > 0 && /^[A-Z][a-z]+$/.test(w) ? w.toLowerCase() : w)).join(" ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }
  // Only what the data says: "In stock" / "Out of stock"; nothing when the catalog has no stock data (null).
  const stockHtml = (item) => (item.in_stock === false ? '<span class="stock out">Out of stock</span>'
    : item.in_stock === true ? '<span class="stock">In stock</span>' : "");
  const short = (s, n = 42) => (s.length > n ? s.slice(0, n - 1).trimEnd() + "…" : s);
  const date = (ts) => new Date(ts * 1000).toLocaleDateString("en", { year: "numeric", month: "short", day: "numeric" });

  function hash(s) {
    let h = 2166136261;
    for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
    return h >>> 0;
  }

  function avatarText(id) {
    if (/^visitor-/.test(id)) return "V" + id.slice(-1).toUpperCase();
    const alnum = id.replace(/[^A-Za-z0-9]/g, "");
    return (alnum.slice(0, 1) + alnum.slice(-2)).toUpperCase() || "?";
  }
  const avatarColor = (id) => `hsl(${hash(id) % 360} 38% 38%)`;
  const avatar = (id) => `<span class="avatar" aria-hidden="true" style="background:${avatarColor(id)}">${esc(avatarText(id))}</span>`;
  const displayName = (id) => (/^visitor-/.test(id) ? "New visitor" : id);

  // ---- placeholder art: a palette and a line icon per top category -----------------------------
  const ICONS = {
    beauty: '<rect x="8.5" y="9" width="7" height="11.5" rx="2"/><path d="M10 9V6.5a2 2 0 0 1 4 0V9"/><path d="M10.5 13.5h3"/>',
    kitchen: '<path d="M4.5 9h11v6a4 4 0 0 1-4 4h-3a4 4 0 0 1-4-4z"/><path d="M15.5 10.5h1.3a2.3 2.3 0 0 1 0 4.6h-1.3"/><path d="M8 3.5c0 1.3.9 1.5.9 2.8M11.5 3.5c0 1.3.9 1.5.9 2.8"/>',
    electronics: '<path d="M4.5 15v-3a7.5 7.5 0 0 1 15 0v3"/><rect x="3" y="14" width="4" height="6.5" rx="1.6"/><rect x="17" y="14" width="4" height="6.5" rx="1.6"/>',
    "sports & outdoors": '<path d="M2.5 19.5l6.5-10 4 6 2.5-3.5 6 7.5z"/><circle cx="17" cy="6" r="2"/>',
    "toys & games": '<rect x="4" y="4" width="16" height="16" rx="3.5"/><circle cx="8.5" cy="8.5" r=".9"/><circle cx="15.5" cy="15.5" r=".9"/><circle cx="15.5" cy="8.5" r=".9"/><circle cx="8.5" cy="15.5" r=".9"/><circle cx="12" cy="12" r=".9"/>',
    home: '<path d="M8 3.5h8l3 8H5z"/><path d="M12 11.5v7"/><path d="M8.5 20.5h7"/>',
    "pet supplies": '<circle cx="6.5" cy="10.5" r="1.7"/><circle cx="10" cy="6.5" r="1.7"/><circle cx="14" cy="6.5" r="1.7"/><circle cx="17.5" cy="10.5" r="1.7"/><path d="M12 12c-3 0-5.5 3.6-5.5 5.6 0 1.9 2 2.4 5.5 2.4s5.5-.5 5.5-2.4c0-2-2.5-5.6-5.5-5.6z"/>',
    books: '<path d="M4.5 5.5a2 2 0 0 1 2-2h12.5v15.5H6.5a2 2 0 0 0-2 2z"/><path d="M4.5 20.5V5.5"/><path d="M8.5 7.5h6.5M8.5 10.5h4.5"/>',
    _: '<path d="M5 8.5h14l-1.2 11.5H6.2z"/><path d="M9 8.5V7a3 3 0 0 1 6 0v1.5"/>',
  };
  // Subcategories get their own icon where there is one (the demo catalog's names; others fall back).
  const SUB_ICONS = {
    "skin care": '<rect x="5" y="10" width="14" height="10.5" rx="2.5"/><rect x="6.5" y="5.5" width="11" height="4.5" rx="1.2"/><path d="M9 15h6"/>',
    makeup: '<rect x="8.5" y="12" width="7" height="9" rx="1.2"/><path d="M9.5 12V8l5-3.5V12"/><path d="M8.5 15.5h7"/>',
    "hair care": '<path d="M3.5 9.5A5.5 5.5 0 0 1 9 4h9v11H9a5.5 5.5 0 0 1-5.5-5.5z" transform="scale(1 .8) translate(0 1)"/><path d="M18 5h2.5M18 11h2.5"/><path d="M9 13.5l1 7h3l-1-7"/><circle cx="9" cy="8.6" r="1.7"/>',
    "coffee & tea": ICONS.kitchen,
    baking: '<path d="M12 13.5v7.5"/><path d="M12 13.5c-3.6-1-4.6-5.2-3.3-7.8C10 3 14 3 15.3 5.7c1.3 2.6.3 6.8-3.3 7.8z"/><path d="M12 13.5c-1.3-2.1-1.5-6.8 0-9.8M12 13.5c1.3-2.1 1.5-6.8 0-9.8"/>',
    cookware: '<circle cx="10" cy="13" r="6.5"/><path d="M16.3 11.3l5.2-1.8"/><circle cx="10" cy="13" r="3"/>',
    drinkware: '<path d="M10 2.5h4v3l1.5 2V20a1.5 1.5 0 0 1-1.5 1.5h-4A1.5 1.5 0 0 1 8.5 20V7.5l1.5-2z"/><path d="M8.5 11h7M8.5 17h7"/>',
    audio: ICONS.electronics,
    "chargers & cables": '<path d="M9 3v4M15 3v4"/><path d="M6.5 7h11v3a5.5 5.5 0 0 1-11 0z"/><path d="M12 15.5V18a3 3 0 0 0 3 3h3.5"/>',
    "keyboards & mice": '<rect x="2.5" y="7" width="19" height="10.5" rx="2"/><path d="M6 10.5h.01M9 10.5h.01M12 10.5h.01M15 10.5h.01M18 10.5h.01M7.5 14h9"/>',
    "phone accessories": '<rect x="7" y="2.5" width="10" height="19" rx="2.5"/><path d="M11 18.5h2"/>',
    running: '<path d="M3 16.5c0-2 .5-5.5 1.5-8.5l3 1c1 1.8 3 2.5 5 2.5l5.5 1.5c1.8.5 3 1.8 3 3.5v1.5H4a1 1 0 0 1-1-1z"/><path d="M3 18.5h18"/><path d="M9.5 11l1-1.5M12.5 11.5l1-1.5"/>',
    yoga: '<circle cx="12" cy="4.8" r="2"/><path d="M12 7.5v6"/><path d="M5.5 10.5l6.5 2.8 6.5-2.8"/><path d="M7 19.5l5-6 5 6"/><path d="M3.5 21h17"/>',
    "camping & hiking": '<path d="M2.5 20L12 4.5 21.5 20z"/><path d="M12 20l-2.8-6h5.6z"/>',
    "stem toys": '<path d="M9.5 3h5M10.5 3v6L5 19a1.5 1.5 0 0 0 1.3 2.2h11.4A1.5 1.5 0 0 0 19 19l-5.5-10V3"/><path d="M7.5 15h9"/>',
    "board games": ICONS["toys & games"],
    puzzles: '<path d="M5 7.5h3.5a2 2 0 1 1 4 0H16V11a2 2 0 1 1 0 4v3.5h-3.5a2 2 0 1 0-4 0H5V15a2 2 0 1 0 0-4z"/>',
    bedding: '<path d="M3 18v-6.5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2V18"/><path d="M3 15h18M3 18v2M21 18v2"/><rect x="5.5" y="6" width="6" height="3.5" rx="1.5"/>',
    lighting: ICONS.home,
    bath: '<path d="M12 3.5c3 4 5.5 7 5.5 10a5.5 5.5 0 0 1-11 0c0-3 2.5-6 5.5-10z"/><path d="M9.5 14a2.5 2.5 0 0 0 2.5 2.5"/>',
    decor: '<path d="M8 14h8l-1 7H9z"/><path d="M12 14V8"/><path d="M12 10c-1-3-4-4-6-3.5.5 2.5 3 4 6 3.5zM12 8c.5-3 3-4.5 5.5-4-.2 2.5-2.5 4.3-5.5 4z"/>',
    dogs: ICONS["pet supplies"],
    cats: '<path d="M5 10.5V4l4 3h6l4-3v6.5a7 7 0 0 1-14 0z"/><path d="M9.5 11.5h.01M14.5 11.5h.01"/><path d="M11 14.5h2l-1 1z"/>',
    "small animals & fish": '<path d="M3 12c3-4.5 8.5-6 13-2.5L21 6v12l-5-3.5C11.5 18 6 16.5 3 12z"/><path d="M8 11h.01"/>',
  };
  // Finer kinds (third-level category names), tried first.
  const KIND_ICONS = [
    [/apparel|clothing|robes/, '<path d="M8 3.5L3.5 6.5l2 3.5L7.5 9v11.5h9V9l2 1 2-3.5L16 3.5c-.5 1.5-2 2.5-4 2.5s-3.5-1-4-2.5z"/>'],
    [/watch/, '<rect x="7" y="7" width="10" height="10" rx="3"/><path d="M9 7l.5-3.5h5L15 7M9 17l.5 3.5h5L15 17"/><path d="M12 10v2.5l1.5 1"/>'],
    [/shoes|boots/, SUB_ICONS.running],
    [/hydration|water bottles|tumblers/, SUB_ICONS.drinkware],
    [/^(foundation|blush|eyeshadow|mascara|brows|setting spray)$/, '<circle cx="12" cy="12" r="8"/><circle cx="12" cy="12" r="4.5"/>'],
    [/^(shampoo|conditioner|cleansers|body care)$/, ICONS.beauty],
    [/straighteners|curling|styling/, '<rect x="4" y="5" width="16" height="4.5" rx="1.5"/><path d="M6.5 9.5v8M9 9.5v8M11.5 9.5v8M14 9.5v8M16.5 9.5v8"/>'],
    [/backpacks/, '<path d="M7 8a5 5 0 0 1 10 0v12.5H7z"/><path d="M9.5 20.5v-5h5v5"/><path d="M10 5.2V3.5h4v1.7"/>'],
    [/^mice$/, '<rect x="7" y="3.5" width="10" height="17" rx="5"/><path d="M12 3.5v5"/>'],
    [/earbuds|speakers/, '<rect x="6" y="3" width="12" height="18" rx="2.5"/><circle cx="12" cy="14" r="3.5"/><path d="M12 7.5h.01"/>'],
    [/^tea$|coffee beans/, '<path d="M5 19c0-8 5-14 14-14 0 9-6 14-14 14z"/><path d="M5 19l8-8"/>'],
    [/knives/, '<path d="M4 20l8.5-8.5"/><path d="M12.5 11.5L20 4c.5 3-1 7.5-5 10.5z"/>'],
    [/candles/, '<rect x="8.5" y="10" width="7" height="11" rx="1"/><path d="M12 10V8"/><path d="M12 3.5c1.5 1.5 1.5 3 0 4.5-1.5-1.5-1.5-3 0-4.5z"/>'],
    [/pillow|cushions/, '<rect x="3.5" y="7" width="17" height="10" rx="4"/><path d="M8 12h8"/>'],
    [/food|treats|feeding|nutrition/, '<path d="M3.5 12h17a8.5 6.5 0 0 1-17 0z"/><path d="M8 9.5c1-1.5 2.5-1.5 3.5 0M12.5 9.5c1-1.5 2.5-1.5 3.5 0"/>'],
    [/yoga mats/, '<circle cx="7" cy="12" r="4"/><path d="M7 8h12.5v8H7"/>'],
    [/robotics|electronics kits/, '<rect x="5" y="8" width="14" height="11" rx="2.5"/><path d="M12 8V5"/><circle cx="12" cy="4" r="1"/><path d="M9.5 12.5h.01M14.5 12.5h.01M9.5 16h5"/>'],
    [/building sets/, '<rect x="4" y="11" width="16" height="8" rx="1"/><path d="M7 11V8.5h3V11M14 11V8.5h3V11"/>'],
  ];
  const PALETTES = {
    beauty: ["#fde4e7", "#f7cdd8", "#a8385f"],
    kitchen: ["#fff1d9", "#fbdcae", "#a35f08"],
    electronics: ["#e1e9ff", "#c6d4fb", "#2f4aa6"],
    "sports & outdoors": ["#dcf2e2", "#b6e0c3", "#2a6446"],
    "toys & games": ["#efe8ff", "#d8cbfb", "#5a3bb8"],
    home: ["#f3ede3", "#e4d8c6", "#735536"],
    "pet supplies": ["#dff4f2", "#bfe6e2", "#1c6f69"],
    books: ["#fbe9dc", "#f3d0b5", "#934317"],
    _: ["#eceef1", "#dadee4", "#48505c"],
  };

  function art(item) {
    const cats = item.categories || [];
    const top = (cats[0] || "").toLowerCase();
    const [c1, c2, ink] = PALETTES[top] || PALETTES._;
    const kind = (cats[2] || "").toLowerCase();
    const icon = (KIND_ICONS.find(([re]) => re.test(kind)) || [])[1] || SUB_ICONS[(cats[1] || "").toLowerCase()] || ICONS[top] || ICONS._;
    const h = hash(item.item_id || item.title || "");
    const cx = 40 + (h % 320), cy = 20 + ((h >> 9) % 120), r = 90 + ((h >> 17) % 70);
    const cx2 = 60 + ((h >> 5) % 280), cy2 = 200 + ((h >> 13) % 90);
    const tilt = ((h >> 21) % 13) - 6;
    const label = cats[1] || cats[0] || "";
    return `<div class="art" style="--art-bg:linear-gradient(135deg, ${c1}, ${c2});--art-ink:${ink};background:var(--art-bg)">
      <svg viewBox="0 0 400 300" preserveAspectRatio="xMidYMid slice" aria-hidden="true" focusable="false">
        <circle cx="${cx}" cy="${cy}" r="${r}" fill="#fff" opacity=".38"/>
        <circle cx="${cx2}" cy="${cy2}" r="46" fill="${ink}" opacity=".06"/>
        <g transform="translate(143 93) rotate(${tilt} 57 57) scale(4.75)" fill="none" stroke="${ink}" stroke-width="1.3"
           stroke-linecap="round" stroke-linejoin="round">${icon}</g>
      </svg>
      <span class="art-label">${esc(label)}</span></div>`;
  }

  // ---- API -------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message, data) { super(message); this.status = status; this.data = data; }
  }
  function detailText(data) {
    const d = data && data.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((x) => `${(x.loc || []).slice(1).join(".")}: ${x.msg}`).join("; ");
    return "";
  }
  // ---- shopper tokens --------------------------------------------------------------------------
  const tokens = new Map();  // user id -> {token, expires_at}
  let demoTokens = true;     // false once the server says it has no demo token route
  async function tokenFor(user) {
    const known = tokens.get(user);
    if (known && known.expires_at - 30 > Date.now() / 1000) return known.token;
    if (!demoTokens) return null;
    const res = await fetch("/demo/token", { method: "POST", body: JSON.stringify({ user_id: user }),
      headers: { Accept: "application/json", "Content-Type": "application/json" } });
    if (!res.ok) {
      if (res.status === 404 || res.status === 405) demoTokens = false;
      return null;
    }
    const data = await res.json();
    tokens.set(user, data);
    return data.token;
  }
  /** The shopper whose token a request needs: the one in /users/{id}/..., or the current one. */
  function tokenUser(path) {
    const m = /^\/users\/([^/?]+)\//.exec(path);
    if (m) { try { return decodeURIComponent(m[1]); } catch { return null; } }
    return path.startsWith("/events") || path.startsWith("/search") ? state.user : null;
  }

  async function api(path, opts = {}) {
    const headers = { Accept: "application/json" };
    const key = saved.get(KEY.apiKey, "");
    if (key) headers["X-API-Key"] = key;
    const who = tokenUser(path);
    const token = who ? await tokenFor(who).catch(() => null) : null;
    if (token) headers["X-Shopper-Token"] = token;
    let body;
    if (opts.body !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(opts.body); }
    const res = await fetch(path, { method: opts.method || "GET", headers, body, signal: opts.signal, keepalive: !!opts.keepalive });
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = text; }
    if (!res.ok) throw new ApiError(res.status, detailText(data) || `${res.status} ${res.statusText}`, data);
    return data;
  }
  const needsKey = (e) => e instanceof ApiError && (e.status === 401 || e.status === 403);

  function banner(message) {
    const el = $("#banner");
    el.textContent = message;
    el.hidden = !message;
  }
  function toast(message) {
    const el = document.createElement("div");
    el.className = "toast";
    el.textContent = message;
    $("#toasts").appendChild(el);
    setTimeout(() => el.remove(), 2600);
  }

  // ---- events ----------------------------------------------------------------------------------
  function rememberLocally(item, type) {
    const key = KEY.recent + state.user;
    const list = saved.get(key, []).filter((e) => !(e.item_id === item.item_id && e.type === type));
    list.unshift({ item_id: item.item_id, title: item.title || item.item_id, categories: item.categories || [],
      type, timestamp: Date.now() / 1000 });
    saved.set(key, list.slice(0, 30));
  }

  /** Send one event; the next feed waits for it, so it reflects the click. */
  function track(type, item, requestId, value) {
    // No timestamp: the server stamps it on arrival, so a wrong clock here cannot misdate it.
    const event = { event_id: "web-" + randomId(16), user_id: state.user, item_id: item.item_id, type };
    if (requestId) event.request_id = String(requestId).slice(0, 100);
    if (value != null) event.value = value;
    rememberLocally(item, type);
    const sent = api("/events", { method: "POST", body: { events: [event] }, keepalive: true })
      .then((r) => {
        if (r.rejected && r.rejected.length) console.warn("event rejected:", r.rejected[0].reason);
        return r;
      })
      .catch((e) => {
        banner(needsKey(e)
          ? "This server needs your shopper token (from the shop's backend) or an ingest key for events. Your clicks are not recorded."
          : `Could not record your ${type}: ${e.message}`);
      });
    state.pending = Promise.all([state.pending, sent]).then(() => undefined);
    return sent;
  }
  const listId = (kind) => `web:${kind}:${randomId(10)}`;

  // A click on any product card: one "click" event with the list's request_id, then the link opens.
  document.addEventListener("click", (ev) => {
    const link = ev.target.closest("a[data-item]");
    if (!link) return;
    const item = { item_id: link.dataset.item, title: link.dataset.title, categories: (link.dataset.cats || "").split("|") };
    state.arrivedByClick = item.item_id;
    track("click", item, link.dataset.list);
  });

  // ---- ratings ---------------------------------------------------------------------------------
  function starsHtml(r, withCount = true) {
    if (!r) return `<span class="none">No ratings yet</span>`;
    const label = `${r.average.toFixed(1)} out of 5 stars from ${r.count} rating${r.count === 1 ? "" : "s"}`;
    return `<span class="stars" style="--r:${r.average}" role="img" aria-label="${label}">★★★★★</span>` +
      (withCount ? `<span aria-hidden="true">${r.average.toFixed(1)} (${r.count})</span>` : "");
  }
  async function loadRatings(ids) {
    const missing = [...new Set(ids)].filter((id) => !state.ratings.has(id));
    for (let i = 0; i < missing.length; i += 150) {
      const chunk = missing.slice(i, i + 150);
      try {
        const data = await api(`/ratings?ids=${enc(chunk.join(","))}`);
        chunk.forEach((id) => state.ratings.set(id, data.ratings[id] || null));
      } catch { /* ratings are decoration: leave them blank */ }
    }
  }
  async function fillRatings(root = main) {
    const slots = $$("[data-rating]", root);
    await loadRatings(slots.map((s) => s.dataset.rating));
    slots.forEach((s) => { if (state.ratings.has(s.dataset.rating)) s.innerHTML = starsHtml(state.ratings.get(s.dataset.rating)); });
  }

  // ---- product cards ---------------------------------------------------------------------------
  function card(item, opts = {}) {
    const cats = item.categories || [];
    const badges = [];
    if (opts.fresh) badges.push('<span class="badge fresh">New for you</span>');
    return `<article class="card${item.in_stock === false ? " out" : ""}">
      <a class="card-link" href="#/item/${enc(item.item_id)}" data-item="${esc(item.item_id)}" data-list="${esc(opts.list || "")}"
         data-title="${esc(item.title)}" data-cats="${esc(cats.join("|"))}">
        ${art(item)}
        <div class="card-body">
          <p class="brand">${esc(item.brand || cats[cats.length - 1] || "")}</p>
          <h3 class="title">${esc(item.title)}</h3>
          <div class="rating" data-rating="${esc(item.item_id)}"></div>
          <div class="meta"><span class="price">${money(item.price)}</span>${item.in_stock === false ? '<span class="oos">Out of stock</span>' : ""}</div>
          ${opts.reason ? `<p class="reason">${esc(opts.reason)}</p>` : ""}
          ${"relevance" in item ? matchHtml(item, opts.best) : ""}
          ${item.evidence && item.evidence.search_clicks ? '<p class="reason clicked">Clicked by shoppers after a search like this</p>' : ""}
        </div>
      </a>${badges.join("")}
    </article>`;
  }
  /** A search hit's calibrated relevance as the API gave it: P(this is the product the query asks for),
   * comparable across queries; the bar is relative to the list's best hit. null: a rule pinned it. */
  function matchHtml(item, best) {
    const r = item.relevance;
    if (r == null) return '<p class="match pinned" data-relevance="">Placed by a merchandising rule</p>';
    const width = best > 0 ? Math.max(4, Math.round((100 * r) / best)) : 0;
    return `<p class="match" data-relevance="${r}" title="Calibrated chance that this is the exact product the query describes">
      <span class="bar" aria-hidden="true"><span style="width:${width}%"></span></span>${relevanceText(r)}</p>`;
  }
  const relevanceText = (r) => `${r < 0.001 ? "<0.1" : (100 * r).toFixed(1)}% relevance`;
  const grid = (items, opts = {}, id = "") =>
    `<div class="grid"${id ? ` id="${id}"` : ""}>${items.map((it, i) => card(it, typeof opts === "function" ? opts(it, i) : opts)).join("")}</div>`;
  const rail = (items, list, id) =>
    `<div class="rail" id="${id}">${items.map((it) => card(it, { list })).join("")}</div>`;
  const empty = (title, text) => `<div class="empty"><h3>${esc(title)}</h3><p>${text}</p></div>`;
  const skeleton = (n = 8) => `<div class="grid">${'<div class="skeleton"></div>'.repeat(n)}</div>`;

  // ---- why an item is recommended ----------------------------------------------------------------
  const VERB = { view: "viewed", click: "viewed", add_to_cart: "added", purchase: "bought", rating: "rated" };
  const SOURCE_TEXT = {
    dense: "close to your interests (embedding search)",
    covisit: "shoppers with your recent items went on to it (co-visitation)",
    popular: "popular over recent weeks",
    trending: "trending now (popularity over about a day)",
    mf: "shoppers like you (matrix factorisation)",
    encoder: "what tends to follow your history (history encoder)",
    new: "a new arrival close to your interests",
    catalog: "from the catalog (no activity yet)",
    pinned: "put here by a merchandising rule",
  };

  /** The API's `reason`: the evidence that put the item there, or an honest generic sentence. Never
   * derived here: a reason made up from whatever the shopper did last is how a dog harness came to be
   * "because you viewed" running shoes. */
  function reasonFor(item) {
    const r = item.reason || "";
    return r ? r.charAt(0).toUpperCase() + r.slice(1) : "";
  }

  /** What is known about the shopper: history from the log (console route) or this browser's own. */
  async function shopperContext(user) {
    const local = { recent: saved.get(KEY.recent + user, []), onboarding: saved.get(KEY.onboard + user, null), fromLog: false };
    try {
      const h = await api(`/users/${enc(user)}/history?limit=30`);
      return { recent: h.events, onboarding: h.onboarding || local.onboarding, fromLog: true };
    } catch {
      return local;
    }
  }

  // ---- views -----------------------------------------------------------------------------------
  const views = {};

  views.home = async () => {
    const user = state.user;
    show("home", `<div class="skeleton" style="min-height:200px"></div><section class="section">${skeleton()}</section>`);
    await state.pending;
    const [ctx, feed, viewed] = await Promise.all([shopperContext(user), api(`/users/${enc(user)}/recommendations?k=12`),
      recentlyViewed(user)]);
    const isNew = !ctx.recent.length && !ctx.onboarding;
    const top = isNew ? heroHtml() : welcomeHtml(user, ctx);
    return {
      html: `${top}
        <section class="section" aria-labelledby="feed-title">
          <div class="section-head">
            <div><p class="eyebrow">${isNew ? "Popular right now" : "Your feed"}</p>
              <h2 id="feed-title">${isNew ? "Start with what shoppers love" : "Recommended for you"}</h2>
              <p id="feed-note"></p></div>
            <span class="kv">Variant <b id="feed-variant">${esc(feed.variant)}</b></span>
          </div>
          <div id="feed-slot"></div>
        </section>
        ${recentlyViewedHtml(viewed)}
        ${trendingHtml()}`,
      after: () => {
        renderFeed(feed, ctx, user, isNew);
        wireOnboarding(user, ctx);
        wireTrending();
        const viewedRail = $("#recently-viewed");
        if (viewedRail) fillRatings(viewedRail);
      },
    };
  };

  // ---- widgets: recently viewed, trending per category, frequently bought together ----------------
  /** The shopper's latest views (GET /users/{id}/recently-viewed), without ``exclude``. */
  async function recentlyViewed(user, exclude = "") {
    try {
      const data = await api(`/users/${enc(user)}/recently-viewed?k=9`);
      return data.results.filter((r) => r.item_id !== exclude).slice(0, 8);
    } catch { return []; }  // a server that guards it with keys: the widget is left out
  }
  function recentlyViewedHtml(items) {
    if (!items.length) return "";
    return `<section class="section" aria-labelledby="viewed-title">
      <div class="section-head"><div><p class="eyebrow">Your history</p><h2 id="viewed-title">Recently viewed</h2></div></div>
      ${rail(items, listId("recently-viewed"), "recently-viewed")}</section>`;
  }

  function trendingHtml() {
    const tabs = state.categories.slice(0, 8).map((c, i) =>
      `<button type="button" class="chip" data-trend="${esc(c.name)}" aria-pressed="${i === 0}">${esc(c.name)}</button>`).join("");
    return `<section class="section" aria-labelledby="trending-title">
      <div class="section-head"><div><p class="eyebrow">What shoppers turn to now</p><h2 id="trending-title">Trending by department</h2></div></div>
      <div class="chips trend-tabs" role="group" aria-label="Department">${tabs}</div>
      <div id="trending-slot" class="trending-slot"></div></section>`;
  }
  async function loadTrending(slot, category, k = 8, id = "trending") {
    let data;
    try { data = await api(`/trending?k=${k}${category ? `&category=${enc(category)}` : ""}`); } catch (e) {
      slot.innerHTML = `<p class="hint error">${esc(e.message)}</p>`;
      return;
    }
    slot.innerHTML = data.results.length ? rail(data.results, listId("trending"), id)
      : empty("Nothing trending here yet", "Once shoppers look at this department, its trends show up here.");
    slot.dataset.category = category || "";
    fillRatings(slot);
  }
  function wireTrending() {
    const slot = $("#trending-slot");
    if (!slot) return;
    const tabs = $$("[data-trend]");
    tabs.forEach((b) => b.addEventListener("click", () => {
      tabs.forEach((o) => o.setAttribute("aria-pressed", String(o === b)));
      loadTrending(slot, b.dataset.trend);
    }));
    if (tabs.length) loadTrending(slot, tabs[0].dataset.trend);
  }

  /** "Frequently bought together": the item and its companions, each with a checkbox, one button. */
  function bundleHtml(item, together) {
    if (!together.results.length) return "";
    const all = [item, ...together.results];
    return `<section class="section" aria-labelledby="together-title">
      <div class="section-head"><div><p class="eyebrow">Often in one order</p><h2 id="together-title">Frequently bought together</h2>
        <p>Shoppers bought these in one order with this item, again and again.</p></div></div>
      <form class="bundle" id="bought-together">
        <ul class="bundle-items">${all.map((it, i) => `<li>
          <label class="bundle-item"><input type="checkbox" checked data-item="${esc(it.item_id)}" data-price="${it.price ?? ""}">
            <span class="thumb">${art(it)}</span>
            <span class="b-text"><span class="t">${i === 0 ? "This item: " : ""}${esc(it.title)}</span>
              <span class="price">${money(it.price)}</span>${i ? `<span class="kv"> · in ${it.baskets} orders with it</span>` : ""}</span>
          </label></li>`).join('<li class="plus" aria-hidden="true">+</li>')}</ul>
        <div class="bundle-buy"><p class="bundle-total" id="bundle-total"></p>
          <button class="btn btn-primary" type="submit" id="bundle-add"></button></div>
      </form></section>`;
  }
  function wireBundle(items) {
    const form = $("#bought-together");
    if (!form) return;
    const boxes = $$("input[type=checkbox]", form);
    const update = () => {
      const on = boxes.filter((b) => b.checked);
      const known = on.every((b) => b.dataset.price !== "");
      const total = on.reduce((a, b) => a + Number(b.dataset.price || 0), 0);
      $("#bundle-total").innerHTML = on.length ? `Total for ${on.length}: <b>${known ? money(total) : "price on request"}</b>` : "Pick at least one item";
      const button = $("#bundle-add");
      button.textContent = on.length === boxes.length ? `Add all ${on.length} to cart` : `Add ${on.length} to cart`;
      button.disabled = !on.length;
    };
    boxes.forEach((b) => b.addEventListener("change", update));
    update();
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const list = listId("bought-together");
      const on = boxes.filter((b) => b.checked).map((b) => items.find((it) => it.item_id === b.dataset.item));
      on.forEach((it) => track("add_to_cart", it, list));
      toast(`Added ${on.length} item${on.length === 1 ? "" : "s"} to your cart`);
    });
  }

  function heroHtml() {
    return `<section class="hero" aria-labelledby="hero-title">
      <div>
        <p class="eyebrow">Welcome to Semrec Market</p>
        <h1 id="hero-title">Shop a feed that learns from every click</h1>
        <p class="lead">Tell us a little about what you like and your feed adapts at once. Everything you open or buy
          refines it further: no account needed.</p>
        <div class="hero-stats" id="hero-stats"></div>
      </div>
      ${onboardingForm("What are you shopping for?", "Pick a few categories or describe it in your own words.")}
    </section>`;
  }
  function welcomeHtml(user, ctx) {
    const last = ctx.recent.find((e) => e.title);
    const count = ctx.recent.length;
    const sub = last ? `Latest: you ${VERB[last.type] || "viewed"} <b>${esc(short(last.title, 60))}</b>` +
      (count ? ` · ${count} recent action${count === 1 ? " shapes" : "s shape"} this feed` : "")
      : ctx.onboarding ? `Tuned to what you told us${ctx.onboarding.interests ? `: “${esc(ctx.onboarding.interests)}”` : ""}` : "";
    return `<section class="welcome" aria-labelledby="welcome-title">
        ${avatar(user)}
        <div class="welcome-text"><h1 id="welcome-title">${count ? "Welcome back" : "Your picks are ready"}${/^visitor-/.test(user) ? "" : ", " + esc(user)}</h1><p>${sub}</p></div>
        <div class="welcome-actions">
          <button class="btn" type="button" id="tune-btn" aria-expanded="false" aria-controls="tune">Tune my interests</button>
          <a class="btn btn-ghost" href="#/console/${enc(user)}">Open in console</a>
        </div>
      </section>
      <div id="tune" class="tune" hidden>${onboardingForm("Tune your feed", "Add categories or words; your history still counts.")}</div>`;
  }
  function onboardingForm(title, text) {
    const cats = state.categories.map((c) =>
      `<button type="button" class="chip" data-cat="${esc(c.name)}" aria-pressed="false">${esc(c.name)}</button>`).join("");
    return `<form class="onboard" id="onboard-form" aria-labelledby="onboard-title">
      <h2 id="onboard-title">${esc(title)}</h2><p>${esc(text)}</p>
      <fieldset><legend>Categories you like</legend><div class="chips" id="onboard-cats">${cats}</div></fieldset>
      <label class="field" for="onboard-text">In your own words</label>
      <div class="row"><input id="onboard-text" maxlength="1000" placeholder="e.g. vegan skincare for dry skin, 手冲咖啡">
        <button class="btn btn-primary" type="submit" id="onboard-submit">Show my picks</button></div>
      <p class="hint error" id="onboard-error" role="alert"></p>
    </form>`;
  }

  function wireOnboarding(user, ctx) {
    const tuneBtn = $("#tune-btn");
    if (tuneBtn) tuneBtn.addEventListener("click", () => {
      const box = $("#tune");
      box.hidden = !box.hidden;
      tuneBtn.setAttribute("aria-expanded", String(!box.hidden));
      if (!box.hidden) $("#onboard-text").focus();
    });
    const stats = $("#hero-stats");
    if (stats) {
      const n = state.categories.reduce((a, c) => a + c.count, 0);
      stats.innerHTML = `<span><b>${n}</b>products</span><span><b>${state.categories.length}</b>departments</span><span><b>0</b>sign-ups needed</span>`;
    }
    const form = $("#onboard-form");
    if (!form) return;
    const prev = ctx.onboarding;
    $$(".chip", form).forEach((chip) => {
      if (prev && (prev.categories || []).includes(chip.dataset.cat)) chip.setAttribute("aria-pressed", "true");
      chip.addEventListener("click", () => chip.setAttribute("aria-pressed", String(chip.getAttribute("aria-pressed") !== "true")));
    });
    if (prev && prev.interests) $("#onboard-text").value = prev.interests;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { interests: $("#onboard-text").value.trim(),
        categories: $$('.chip[aria-pressed="true"]', form).map((c) => c.dataset.cat), liked_items: [] };
      const err = $("#onboard-error");
      if (!body.interests && !body.categories.length) { err.textContent = "Pick a category or type a few words first."; return; }
      err.textContent = "";
      const button = $("#onboard-submit");
      button.disabled = true;
      button.textContent = "Finding picks…";
      try {
        const feed = await api(`/users/${enc(user)}/onboarding?k=12`, { method: "POST", body });
        saved.set(KEY.onboard + user, body);
        const context = { ...ctx, onboarding: body };
        $("#feed-title").textContent = "Picked for you";
        $(".section .eyebrow").textContent = "Your feed";
        renderFeed(feed, context, user, false, "Updated from your interests just now");
        const hero = $(".hero");
        if (hero) { // a new visitor is now a known one: the welcome replaces the sign-up pitch
          hero.outerHTML = welcomeHtml(user, context);
          wireOnboarding(user, context);
        }
        toast("Your feed now follows your interests");
        $("#feed-slot").scrollIntoView({ behavior: "smooth", block: "start" });
      } catch (e) {
        err.textContent = needsKey(e) ? "This server needs your shopper token (from the shop's backend) for onboarding." : e.message;
      } finally {
        button.disabled = false;
        button.textContent = "Show my picks";
      }
    });
  }

  function renderFeed(feed, ctx, user, isNew, note) {
    const before = state.feeds.get(user);
    const ids = feed.results.map((r) => r.item_id);
    const fresh = new Set(before ? ids.filter((id) => !before.includes(id)) : []);
    state.feeds.set(user, ids);
    $("#feed-variant").textContent = feed.variant;
    const slot = $("#feed-slot");
    if (!feed.results.length) {
      slot.innerHTML = empty("Nothing to recommend yet", "The catalog is empty or everything is filtered out.");
      return;
    }
    slot.innerHTML = grid(feed.results, (it) => ({ list: feed.request_id, fresh: fresh.has(it.item_id),
      reason: isNew ? "" : reasonFor(it) }), "feed");
    const noteEl = $("#feed-note");
    noteEl.className = fresh.size ? "feed-note" : "";
    noteEl.textContent = note || (fresh.size ? `${fresh.size} new pick${fresh.size === 1 ? "" : "s"} since you last looked: your clicks count`
      : isNew ? "A varied list while we get to know you." : "Ordered by what you viewed, bought and told us.");
    fillRatings(slot);
  }

  views.search = async (params) => {
    const q = (params.get("q") || "").trim();
    const category = params.get("category") || "";
    $("#q").value = q;
    if (!q) return { html: empty("Search the shop", "Type what you are looking for in the box above.") };
    show("search", `<div class="results-head"><h1>Results for “${esc(q)}”</h1></div><section class="section">${skeleton()}</section>`);
    let url = `/search?q=${enc(q)}&k=24&expand=true&user_id=${enc(state.user)}`;
    if (category) url += `&category=${enc(category)}`;
    const data = await api(url);
    const list = data.request_id || listId("search");
    const terms = (data.expansion || []).map((t) => (typeof t === "string" ? { term: t, source: "" } : t));
    const typo = terms.filter((t) => t.source === "typo");
    const understood = parseChips(data.parsed);
    const extra = terms.filter((t) => t.source !== "typo");
    const tops = countBy(data.results.map((r) => (r.categories || [])[0]).filter(Boolean));
    const facetHref = (c) => `#/search?q=${enc(q)}${c ? `&category=${enc(c)}` : ""}`;
    return {
      html: `<div class="results-head">
          <p class="eyebrow">Search</p>
          <h1>Results for “${esc(q)}”${category ? ` in ${esc(category)}` : ""}</h1>
          ${understood.length ? `<p class="expansion" id="understood"><span>Understood:</span> ${understood.map(([kind, text]) =>
            `<span class="term" data-kind="${esc(kind)}">${esc(kind)}: ${esc(text)}</span>`).join(" ")}</p>` : ""}
          ${typo.length ? `<p class="expansion" id="spelling">Spelling corrected: ${typo.map((t) => `<span class="term" data-source="typo">${esc(t.term)}</span>`).join(" ")}</p>` : ""}
          ${extra.length ? `<p class="expansion" id="expansion"><span>Also searching:</span> ${extra.map((t) =>
            `<span class="term" data-source="${esc(t.source)}" title="${esc(t.source ? "from " + t.source : "")}">${esc(t.term)}</span>`).join(" ")}</p>` : ""}
          <p class="kv">${data.results.length} result${data.results.length === 1 ? "" : "s"}${data.took_ms != null ? ` · ${Math.round(data.took_ms)} ms` : ""}${data.personalised ? " · personalised for you" : ""}
            · <span id="relevance-note">relevance: the chance a hit is the product you describe; unlikely ones are left out</span></p>
        </div>
        ${tops.length > 1 || category ? `<nav class="chips facets" aria-label="Filter by department">
          <a class="chip" href="${facetHref("")}" aria-current="${!category}">All</a>
          ${(category && !tops.some(([c]) => c === category) ? [[category, 0]] : tops).map(([c, n]) =>
            `<a class="chip" href="${facetHref(c)}" ${c === category ? 'aria-current="true"' : ""}>${esc(c)}${n ? ` <span class="count">${n}</span>` : ""}</a>`).join("")}
        </nav>` : ""}
        <section class="section">${data.results.length ? grid(data.results, { list, best: Math.max(0, ...data.results.map((r) => r.relevance || 0)) }, "results")
          : empty("No matches", "Try fewer or different words, or browse a department above.")}</section>`,
      after: () => fillRatings(),
    };
  };

  // What reviews praise and complain about (GET /items/{id}: pros / cons with a sentence each).
  function aspectsHtml(item) {
    const list = (rows, cls, head) => rows && rows.length ? `<div class="aspects ${cls}"><h3>${head}</h3><ul>${rows.map((a) =>
      `<li><b>${esc(a.term)}</b> <span class="kv">(${a.mentions} mentions)</span> “${esc(a.sentence)}”</li>`).join("")}</ul></div>` : "";
    const html = list(item.pros, "pros", "Shoppers like") + list(item.cons, "cons", "Shoppers mention");
    return html ? `<div id="aspects">${html}</div>` : "";
  }

  // What /search understood of the query (its `parsed`): hard filters first, then boosts.
  function parseChips(p) {
    if (!p) return [];
    const money = (v) => `$${Number(v).toFixed(Number(v) % 1 ? 2 : 0)}`;
    const out = [];
    if (p.min_price != null && p.max_price != null) out.push(["price", `${money(p.min_price)}–${money(p.max_price)}`]);
    else if (p.max_price != null) out.push(["price", `up to ${money(p.max_price)}`]);
    else if (p.min_price != null) out.push(["price", `from ${money(p.min_price)}`]);
    if (p.brand) out.push(["brand", p.brand]);
    if (p.category) out.push(["category", p.category]);
    (p.exclude_brands || []).concat(p.exclude_words || []).forEach((x) => out.push(["not", x]));
    (p.sizes || []).forEach((x) => out.push(["size", x]));
    (p.boost_brands || []).forEach((x) => out.push(["prefers", x]));
    return out;
  }

  function countBy(values) {
    const m = new Map();
    values.forEach((v) => m.set(v, (m.get(v) || 0) + 1));
    return [...m.entries()].sort((a, b) => b[1] - a[1]);
  }

  views.category = async (parts, params) => {
    const name = parts[1] || "";
    const sub = params.get("sub") || "";
    show("category", `<h1>${esc(name)}</h1><section class="section">${skeleton()}</section>`);
    await state.pending;
    const feed = await api(`/users/${enc(state.user)}/recommendations?k=24&category=${enc(sub || name)}`);
    const node = state.categories.find((c) => c.name === name);
    const subs = node ? node.children : [];
    return {
      html: `<nav class="crumbs" aria-label="Breadcrumb"><a href="#/">Home</a><span aria-hidden="true">›</span><span>${esc(name)}</span></nav>
        <div class="section-head"><div><p class="eyebrow">Department</p><h1>${esc(sub || name)}</h1>
          <p>Ordered for you: what you viewed and bought comes first.</p></div></div>
        ${subs.length ? `<nav class="chips facets" aria-label="Subcategories">
          <a class="chip" href="#/c/${enc(name)}" ${!sub ? 'aria-current="true"' : ""}>All ${esc(name)}</a>
          ${subs.map((s) => `<a class="chip" href="#/c/${enc(name)}?sub=${enc(s.name)}" ${s.name === sub ? 'aria-current="true"' : ""}>${esc(s.name)} <span class="count">${s.count}</span></a>`).join("")}
        </nav>` : ""}
        <section class="section">${feed.results.length ? grid(feed.results, (it) => ({ list: feed.request_id, reason: reasonFor(it) }), "category-grid")
          : empty("Nothing here", "No items in this department right now.")}</section>
        <section class="section" aria-labelledby="cat-trending-title">
          <div class="section-head"><div><p class="eyebrow">What shoppers turn to now</p>
            <h2 id="cat-trending-title">Trending in ${esc(sub || name)}</h2></div></div>
          <div id="category-trending-slot"></div></section>`,
      after: () => {
        fillRatings();
        loadTrending($("#category-trending-slot"), sub || name, 8, "category-trending");
      },
    };
  };

  views.item = async (parts) => {
    const id = parts[1];
    show("item", `<div class="product"><div class="skeleton" style="aspect-ratio:1"></div><div class="skeleton"></div></div>`);
    let item;
    try {
      item = await api(`/items/${enc(id)}`);
    } catch (e) {
      if (e.status === 404) return { html: empty("Product not found", `There is no product ${esc(id)} in this shop.`) };
      throw e;
    }
    if (state.arrivedByClick !== id) track("view", item, listId("direct"));
    state.arrivedByClick = null;
    const [similar, also, together, viewed] = await Promise.all([
      api(`/items/${enc(id)}/similar?k=6`).catch(() => ({ results: [] })),
      api(`/items/${enc(id)}/also-bought?k=6`).catch(() => ({ results: [] })),
      api(`/items/${enc(id)}/bought-together?k=2`).catch(() => ({ results: [] })),
      recentlyViewed(state.user, id),
      loadRatings([id]),
    ]);
    const cats = item.categories || [];
    const attrs = Object.entries(item.attributes || {});
    return {
      html: `<nav class="crumbs" aria-label="Breadcrumb"><a href="#/">Home</a>
          ${cats.map((c, i) => `<span aria-hidden="true">›</span>${i === 0 ? `<a href="#/c/${enc(c)}">${esc(c)}</a>`
            : i === 1 ? `<a href="#/c/${enc(cats[0])}?sub=${enc(c)}">${esc(c)}</a>` : `<span>${esc(c)}</span>`}`).join("")}</nav>
        <article class="product" data-item-id="${esc(item.item_id)}">
          ${art(item)}
          <div>
            <p class="brand">${esc(item.brand)}</p>
            <h1 id="product-title">${esc(item.title)}</h1>
            <div class="rating" id="product-rating">${starsHtml(state.ratings.get(id))}</div>
            <span class="price">${money(item.price)}</span>
            ${stockHtml(item)}
            <div class="actions">
              <button class="btn btn-primary" type="button" id="add-to-cart" ${item.in_stock === false ? "disabled" : ""}>Add to cart</button>
              <button class="btn" type="button" id="buy-now" ${item.in_stock === false ? "disabled" : ""}>Buy now</button>
            </div>
            <div class="desc">${esc(item.description)}</div>
            ${attrs.length ? `<dl class="attrs">${attrs.map(([k, v]) => `<dt>${esc(humanKey(k))}</dt><dd>${esc(v)}</dd>`).join("")}</dl>` : ""}
            <div class="rate-box"><span class="label" id="rate-label">Rate this product</span>
              <span class="rate-stars" role="group" aria-labelledby="rate-label">${[1, 2, 3, 4, 5].map((n) =>
                `<button type="button" data-stars="${n}" aria-label="${n} star${n > 1 ? "s" : ""}">★</button>`).join("")}</span>
              <span class="kv" id="rate-done"></span></div>
            <div id="histogram">${histogram(state.ratings.get(id))}</div>
            ${aspectsHtml(item)}
          </div>
        </article>
        <section class="section" aria-labelledby="similar-title">
          <div class="section-head"><div><p class="eyebrow">More like this</p><h2 id="similar-title">Similar items</h2></div></div>
          ${similar.results.length ? rail(similar.results, listId("similar"), "similar") : empty("No similar items", "Nothing close enough in the catalog.")}
        </section>
        ${bundleHtml(item, together)}
        <section class="section" aria-labelledby="also-title">
          <div class="section-head"><div><p class="eyebrow">From shoppers' baskets</p><h2 id="also-title">Customers also bought</h2>
            <p>What shoppers bought in the same order or session as this item.</p></div></div>
          ${also.results.length ? rail(also.results, listId("also-bought"), "also-bought")
            : `<div id="also-bought">${empty("No baskets with this item yet", "Once shoppers buy it alongside other things, they show up here.")}</div>`}
        </section>
        ${recentlyViewedHtml(viewed)}`,
      after: () => {
        fillRatings();
        wireBundle([item, ...together.results]);
        $("#add-to-cart").addEventListener("click", () => { track("add_to_cart", item, listId("product")); toast("Added to your cart: your feed will follow"); });
        $("#buy-now").addEventListener("click", () => { track("purchase", item, listId("product")); toast("Thanks for your order!"); });
        $$(".rate-stars button").forEach((b) => b.addEventListener("click", async () => {
          const n = Number(b.dataset.stars);
          $$(".rate-stars button").forEach((o) => {
            o.classList.toggle("on", Number(o.dataset.stars) <= n);
            o.setAttribute("aria-pressed", String(Number(o.dataset.stars) === n));
          });
          await track("rating", item, listId("product"), n);
          state.ratings.delete(id);
          await loadRatings([id]);
          $("#product-rating").innerHTML = starsHtml(state.ratings.get(id));
          $("#histogram").innerHTML = histogram(state.ratings.get(id));
          $("#rate-done").textContent = `Thanks! You rated it ${n} star${n > 1 ? "s" : ""}.`;
        }));
      },
    };
  };

  function histogram(r) {
    if (!r) return "";
    const max = Math.max(...r.stars, 1);
    return `<div class="histogram" aria-label="Ratings by stars">${[5, 4, 3, 2, 1].map((s) =>
      `<div class="bar"><span>${s} ★</span><span class="track"><span class="fill" style="display:block;width:${(100 * r.stars[s - 1]) / max}%"></span></span><span>${r.stars[s - 1]}</span></div>`).join("")}</div>`;
  }

  // ---- console ---------------------------------------------------------------------------------
  views.console = async (parts) => {
    const user = parts[1] || state.user;
    if (parts[1] && parts[1] !== state.user) setUser(parts[1], false);
    show("console", `<div class="console"><div class="panel skeleton"></div><div class="panel skeleton"></div></div>`);
    await state.pending;
    const [shoppers, variants] = await Promise.all([
      api("/shoppers").catch((e) => ({ error: e })),
      api(`/variants?user_id=${enc(user)}`).catch(() => ({ variants: [], assigned: null })),
    ]);
    state.variants = variants;
    if (!shoppers.error) state.shoppers = shoppers.shoppers;
    return {
      html: `<div class="console">
        <aside>
          <section class="panel" aria-labelledby="shoppers-title">
            <h2 id="shoppers-title">Shoppers</h2>
            ${shopperPanel(shoppers, user)}
          </section>
          <section class="panel" aria-labelledby="key-title">
            <h2 id="key-title">API key</h2>
            <form class="keybox" id="key-form">
              <label for="api-key">Sent as X-API-Key with every request from this browser (servers that require keys).</label>
              <div class="row"><input id="api-key" type="password" autocomplete="off" value="${esc(saved.get(KEY.apiKey, ""))}">
                <button class="btn btn-small" type="submit">Save</button></div>
            </form>
          </section>
        </aside>
        <div>
          <section class="panel">
            <div class="console-head">
              ${avatar(user)}
              <div><p class="eyebrow">Shopper</p><h1 id="console-user">${esc(user)}</h1>
                <span class="kv">A/B bucket: <b>${esc(variants.assigned || "–")}</b> · the storefront now shops as this shopper</span></div>
              <span class="spacer"></span>
              <a class="btn btn-primary" href="#/">Open their storefront</a>
            </div>
            <div class="cols">
              <section aria-labelledby="history-title"><h2 id="history-title">History</h2><div id="history"><div class="skeleton" style="min-height:200px"></div></div></section>
              <section aria-labelledby="recs-title"><h2 id="recs-title">Recommendations and their sources</h2><div id="recs"><div class="skeleton" style="min-height:200px"></div></div></section>
            </div>
            <div class="legend" aria-label="Sources">${Object.entries(SOURCE_TEXT).map(([s, t]) => `<span><span class="src ${s}">${s}</span>${esc(t)}</span>`).join("")}</div>
          </section>
          <section class="panel" aria-labelledby="ab-title">
            <h2 id="ab-title">A/B variants side by side</h2>
            ${variantControls(variants)}
            <div id="compare"></div>
          </section>
          <section class="panel" aria-labelledby="report-title">
            <h2 id="report-title">Offline evaluation report</h2>
            <div id="report"><div class="skeleton" style="min-height:120px"></div></div>
          </section>
        </div></div>`,
      after: () => {
        wireConsole(user);
        loadHistoryAndRecs(user);
        loadCompare(user);
        loadReport();
      },
    };
  };

  function shopperPanel(shoppers, user) {
    if (shoppers.error) {
      return needsKey(shoppers.error)
        ? `<p class="hint">Listing shoppers needs an admin key on this server (<code>semrec demo</code> prints one). Save it below.</p>`
        : `<p class="hint error">${esc(shoppers.error.message)}</p>`;
    }
    const rows = shoppers.shoppers.map((s) => `<li><button type="button" data-user="${esc(s.user_id)}" aria-current="${s.user_id === user}">
        ${avatar(s.user_id)}<span class="who"><b>${esc(s.user_id)}</b><span class="tags">${s.top_categories.map((c) => `<span class="tag">${esc(c)}</span>`).join("")}</span></span>
        <span class="n">${s.events}</span></button></li>`).join("");
    return `<label class="sr-only" for="shopper-filter">Filter shoppers</label>
      <input id="shopper-filter" class="filter-input" placeholder="Filter by id or taste…">
      <ul class="shopper-list" id="shopper-list">${rows || `<li class="hint">${esc(shoppers.note || "No shopper in the shoppers file has history in the event log.")}</li>`}</ul>
      <p class="hint">${shoppers.shoppers.length} shoppers with history, read from <code>${esc(shoppers.source.split("/").slice(-2).join("/"))}</code>:
        the event log keeps only pseudonymised ids.</p>`;
  }

  function variantControls(v) {
    const names = v.variants.map((x) => x.name);
    if (names.length < 2) {
      return `<p class="hint">Only one variant is configured (<code>${esc(names[0] || "default")}</code>). Set
        <code>SEMREC_VARIANTS</code>, e.g. <code>[{"name": "control", "share": 0.5}, {"name": "no-covisit", "share": 0.5, "candidates": {"covisit": 0}}]</code>,
        to compare two side by side.</p>`;
    }
    const a = v.assigned && names.includes(v.assigned) ? v.assigned : names[0];
    const b = names.find((n) => n !== a);
    const opts = (sel) => names.map((n) => `<option ${n === sel ? "selected" : ""}>${esc(n)}</option>`).join("");
    const describe = (x) => `${x.name}: ${Math.round(x.share * 100)}% of traffic${Object.keys(x.candidates).length
      ? ", " + Object.entries(x.candidates).map(([k, w]) => `${k}=${w}`).join(", ") : ", default weights"}`;
    return `<form class="compare-controls" id="compare-form">
        <label>Variant A<select id="variant-a">${opts(a)}</select></label>
        <label>Variant B<select id="variant-b">${opts(b)}</select></label>
      </form>
      <p class="hint" style="margin-top:8px">${v.variants.map((x) => esc(describe(x))).join(" · ")}. Forced variants are not logged as A/B impressions.</p>`;
  }

  function wireConsole(user) {
    $$("#shopper-list button").forEach((b) => b.addEventListener("click", () => { location.hash = `#/console/${enc(b.dataset.user)}`; }));
    const filter = $("#shopper-filter");
    if (filter) filter.addEventListener("input", () => {
      const q = filter.value.trim().toLowerCase();
      $$("#shopper-list li").forEach((li) => { li.hidden = q && !li.textContent.toLowerCase().includes(q); });
    });
    const current = $('#shopper-list button[aria-current="true"]');
    if (current) current.scrollIntoView({ block: "nearest" });
    $("#key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      saved.set(KEY.apiKey, $("#api-key").value.trim());
      banner("");
      toast("API key saved in this browser");
      route();
    });
    ["#variant-a", "#variant-b"].forEach((s) => { const el = $(s); if (el) el.addEventListener("change", () => loadCompare(user)); });
  }

  function rowItem(item, opts = {}) {
    return `<li class="row-item${opts.both ? " both" : ""}">
      <span class="thumb">${art(item)}</span>
      <span style="min-width:0"><a class="t" href="#/item/${enc(item.item_id)}" data-item="${esc(item.item_id)}" data-list="${esc(opts.list || "")}"
          data-title="${esc(item.title || item.item_id)}" data-cats="${esc((item.categories || []).join("|"))}">${esc(item.title || item.item_id + " (removed)")}</a>
        <span class="s">${opts.sub || ""}</span></span>
      <span class="r">${opts.right || ""}</span></li>`;
  }

  async function loadHistoryAndRecs(user) {
    const [hist, recs] = await Promise.all([
      api(`/users/${enc(user)}/history?limit=50`).catch((e) => ({ error: e })),
      api(`/users/${enc(user)}/recommendations?k=10`).catch((e) => ({ error: e })),
    ]);
    if (!$("#history")) return;
    if (hist.error) {
      $("#history").innerHTML = `<p class="hint">${needsKey(hist.error) ? "Reading a shopper's history needs their shopper token or a key with role backend." : esc(hist.error.message)}</p>`;
    } else {
      const ob = hist.onboarding;
      $("#history").innerHTML = (ob ? `<p class="hint">Onboarding: ${[ob.interests && `“${esc(ob.interests)}”`, ...ob.categories.map(esc)].filter(Boolean).join(", ") || "–"}</p>` : "") +
        (hist.events.length ? `<ul class="list" id="history-list">${hist.events.map((e) => rowItem(e, {
          list: listId("console-history"),
          sub: `<span class="etype ${esc(e.type)}">${esc(e.type.replace("_", " "))}</span>${e.value != null && e.type === "rating" ? ` ${"★".repeat(Math.round(e.value))}` : ""}
            <span>${esc((e.categories || [])[1] || "")}</span>`,
          right: date(e.timestamp) })).join("")}</ul>`
          : empty("No history", "This shopper has no events in the log yet."));
    }
    if (recs.error) {
      $("#recs").innerHTML = `<p class="hint error">${esc(recs.error.message)}</p>`;
      return;
    }
    $("#recs").innerHTML = `<p class="hint">Variant <b>${esc(recs.variant)}</b> · request <code>${esc(recs.request_id.slice(0, 8))}</code></p>
      <ul class="list" id="recs-list">${recs.results.map((r, i) => rowItem(r, {
        list: recs.request_id,
        sub: r.sources.map((s) => `<span class="src ${esc(s)}">${esc(s)}</span>`).join("") + ruleBadges(r) + ` <span>${esc(reasonFor(r))}</span>`,
        right: `#${i + 1}<br>${r.score.toFixed(3)}` })).join("")}</ul>`;
  }

  async function loadCompare(user) {
    const slot = $("#compare");
    if (!slot || !$("#variant-a")) return;
    const a = $("#variant-a").value, b = $("#variant-b").value;
    slot.innerHTML = `<div class="skeleton" style="min-height:160px;margin-top:14px"></div>`;
    const [ra, rb] = await Promise.all([a, b].map((v) => api(`/users/${enc(user)}/recommendations?k=10&variant=${enc(v)}`).catch((e) => ({ error: e }))));
    if (ra.error || rb.error) { slot.innerHTML = `<p class="hint error">${esc((ra.error || rb.error).message)}</p>`; return; }
    const idsA = ra.results.map((r) => r.item_id), idsB = rb.results.map((r) => r.item_id);
    const both = idsA.filter((id) => idsB.includes(id));
    const column = (res, name, other) => `<section aria-label="Variant ${esc(name)}"><h3 class="kv">Variant <b>${esc(name)}</b></h3>
      <ul class="list" data-variant="${esc(name)}">${res.results.map((r, i) => {
        const j = other.indexOf(r.item_id);
        return rowItem(r, { list: res.request_id, both: j >= 0,
          sub: r.sources.map((s) => `<span class="src ${esc(s)}">${esc(s)}</span>`).join(""),
          right: `#${i + 1}${j >= 0 ? `<br><small>${j === i ? "same" : `#${j + 1} there`}</small>` : "<br><small>only here</small>"}` });
      }).join("")}</ul></section>`;
    slot.innerHTML = `<p class="overlap" id="overlap">${both.length} of ${idsA.length} items in both lists (marked with a bar).</p>
      <div class="cols">${column(ra, a, idsB)}${column(rb, b, idsA)}</div>`;
  }

  async function loadReport() {
    const slot = $("#report");
    let rep;
    try { rep = await api("/report"); } catch (e) { slot.innerHTML = `<p class="hint error">${esc(e.message)}</p>`; return; }
    if (!rep.exists || (!rep.plots.length && !rep.markdown)) {
      slot.innerHTML = empty("No evaluation report yet",
        `Plots appear here once an offline evaluation has written its PNGs to <code>${esc(rep.directory)}</code>
         (setting <code>SEMREC_REPORT_DIR</code>), e.g. <code>python -m evaluation.harness beauty --data-dir ../shared/data --out ${esc(rep.directory)}</code>.`);
      return;
    }
    slot.innerHTML = `<div class="plots">${rep.plots.map((p) => `<figure><img src="${esc(p.url)}" alt="Evaluation plot: ${esc(p.title)}">
        <figcaption>${esc(p.title)}</figcaption></figure>`).join("")}</div>
      ${rep.markdown ? `<details class="md" ${rep.plots.length ? "" : "open"}><summary>Report text (results.md)</summary>${markdown(rep.markdown)}</details>` : ""}`;
  }

  /** Enough Markdown for results.md: headings, paragraphs, tables, inline code and bold. */
  function markdown(text) {
    const inline = (s) => esc(s).replace(/`([^`]+)`/g, "<code>$1</code>").replace(/\*\*([^*]+)\*\*/g, "<b>$1</b>");
    const out = [];
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      if (/^#{1,6} /.test(line)) {
        const level = Math.min(line.indexOf(" "), 3) + 1;
        out.push(`<h${level}>${inline(line.replace(/^#+ /, ""))}</h${level}>`);
      } else if (line.startsWith("|")) {
        const rows = [];
        while (i < lines.length && lines[i].startsWith("|")) rows.push(lines[i++]);
        i--;
        const cells = (r) => r.replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
        const body = rows.filter((r, n) => n !== 1 || !/^\|[\s:|-]+\|?$/.test(r));
        out.push(`<table><thead><tr>${cells(body[0]).map((c) => `<th>${inline(c)}</th>`).join("")}</tr></thead><tbody>${body.slice(1)
          .map((r) => `<tr>${cells(r).map((c) => `<td>${inline(c)}</td>`).join("")}</tr>`).join("")}</tbody></table>`);
      } else if (line.trim()) {
        out.push(`<p>${inline(line)}</p>`);
      }
    }
    return out.join("");
  }

  // ---- merchandising: rules per placement, a preview, the audit trail -------------------------------
  const ruleBadges = (item) => (item.rules || []).map((id) => `<span class="src rule" data-rule="${id}">rule #${id}</span>`).join("");
  const PLACEMENT_TEXT = { home: "Home feed", similar: "Similar items", search: "Search", also_bought: "Also bought",
    bought_together: "Bought together", trending: "Trending" };
  const EDITOR = "semrec.editor";
  const toInput = (ts) => (ts == null ? "" : new Date(ts * 1000 - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16));
  const fromInput = (v) => (v ? new Date(v).getTime() / 1000 : null);
  const when = (ts) => new Date(ts * 1000).toLocaleString("en", { dateStyle: "medium", timeStyle: "short" });

  function ruleSummary(r) {
    const cond = [r.item_ids.length && (r.action === "pin" ? r.item_ids[0] : `items ${r.item_ids.join(", ")}`),
      r.brand && `brand ${r.brand}`, r.category && `category ${r.category}`,
      r.attribute && `${r.attribute.key} = ${r.attribute.value}`,
      (r.min_price != null || r.max_price != null) && `price ${r.min_price ?? 0}–${r.max_price ?? "∞"}`].filter(Boolean);
    const what = r.action === "pin" ? `pin ${cond[0]} at slot ${r.slot}` : `${r.action} ${cond.join(", ")}` +
      (r.action === "boost" || r.action === "bury" ? ` (strength ${r.strength})` : "");
    const window = r.start || r.end ? ` · ${r.start ? when(r.start) : "now"} → ${r.end ? when(r.end) : "open"}` : "";
    return what + window;
  }

  views.merch = async () => {
    show("merch", `<div class="console"><div class="panel skeleton"></div><div class="panel skeleton"></div></div>`);
    let book;
    try { book = await api("/rules"); } catch (e) { book = { error: e }; }
    if (book.error) {
      return { html: `<section class="panel"><h1>Merchandising rules</h1><p class="hint error" id="rules-error">${needsKey(book.error)
        ? "Editing rules needs an admin key: save one in the <a href=\"#/console\">console</a> (API key)." : esc(book.error.message)}</p></section>` };
    }
    const check = (name, value, label, on) => `<label class="check"><input type="checkbox" name="${name}" value="${esc(value)}" ${on ? "checked" : ""}> ${esc(label)}</label>`;
    return {
      html: `<div class="console merch">
        <section class="panel" aria-labelledby="rule-form-title">
          <h1 id="rule-form-title">Merchandising rules</h1>
          <p class="hint">Pin an item to a slot, boost, bury or block items by brand, category, attribute or price, per placement,
            for a time window and some A/B variants. Rules apply after ranking; every list says which rules moved its items.</p>
          <form id="rule-form" class="rule-form" novalidate>
            <input type="hidden" name="id">
            <label>Name<input name="name" maxlength="100" placeholder="e.g. Dryer week"></label>
            <label>Action<select name="action">${["pin", "boost", "bury", "block"].map((a) => `<option value="${a}">${a}</option>`).join("")}</select></label>
            <fieldset><legend>Placements</legend><div class="checks">${book.placements.map((p) => check("placements", p, PLACEMENT_TEXT[p] || p, p === "home")).join("")}</div></fieldset>
            <label>Item ids <span class="hint">(a pin: the one item)</span><input name="item_ids" placeholder="D0297, D0005"></label>
            <label data-for="pin">Slot<input name="slot" type="number" min="1" max="100" value="1"></label>
            <div class="two"><label data-for="cond">Brand<input name="brand" maxlength="200"></label>
              <label data-for="cond">Category<input name="category" maxlength="200" list="rule-categories"></label></div>
            <datalist id="rule-categories">${state.categories.flatMap((c) => [c.name, ...c.children.map((x) => x.name)]).map((c) => `<option value="${esc(c)}">`).join("")}</datalist>
            <div class="two"><label data-for="cond">Attribute<input name="attr_key" maxlength="200" placeholder="e.g. hair type"></label>
              <label data-for="cond">equals<input name="attr_value" maxlength="1000" placeholder="e.g. curly"></label></div>
            <div class="two"><label data-for="cond">Min price<input name="min_price" type="number" min="0" step="0.01"></label>
              <label data-for="cond">Max price<input name="max_price" type="number" min="0" step="0.01"></label></div>
            <label data-for="move">Strength <span class="hint">(1: above every other item)</span><input name="strength" type="number" min="0.05" max="1" step="0.05" value="0.5"></label>
            <div class="two"><label>Starts<input name="start" type="datetime-local"></label><label>Ends<input name="end" type="datetime-local"></label></div>
            <fieldset><legend>A/B variants <span class="hint">(none ticked: every variant)</span></legend><div class="checks">${book.variants.map((v) => check("variants", v, v, false)).join("")}</div></fieldset>
            ${check("enabled", "1", "Enabled", true)}
            <label>Your name <span class="hint">(for the audit trail)</span><input name="editor" maxlength="100" value="${esc(saved.get(EDITOR, ""))}"></label>
            <div class="row"><button class="btn btn-primary" type="submit" id="rule-save">Add rule</button>
              <button class="btn btn-ghost" type="button" id="rule-cancel" hidden>Cancel editing</button></div>
            <p class="hint error" id="rule-error" role="alert"></p>
          </form>
        </section>
        <div>
          <section class="panel" aria-labelledby="rules-title"><h2 id="rules-title">Rules</h2><div id="rule-list"></div></section>
          <section class="panel" aria-labelledby="preview-title"><h2 id="preview-title">Preview a placement</h2>
            <form id="preview-form" class="compare-controls">
              <label>Placement<select id="preview-kind"><option value="search">Search for</option><option value="similar">Similar to item</option>
                <option value="home">Home feed of shopper</option><option value="also">Also bought with item</option><option value="trending">Trending in</option></select></label>
              <label>Query, item, shopper or category<input id="preview-input" value="hair dryer"></label>
              <button class="btn btn-small" type="submit">Show</button>
            </form>
            <ul class="list" id="preview-list"></ul></section>
          <section class="panel" aria-labelledby="audit-title"><h2 id="audit-title">Audit trail</h2><ul class="list audit" id="audit-list"></ul></section>
        </div></div>`,
      after: () => wireMerch(book.rules),
    };
  };

  function wireMerch(rules) {
    const form = $("#rule-form");
    const f = (n) => form.elements[n];
    const showFields = () => {
      const action = f("action").value;
      $$("[data-for]", form).forEach((el) => {
        el.hidden = (el.dataset.for === "pin" && action !== "pin") || (el.dataset.for === "move" && !["boost", "bury"].includes(action))
          || (el.dataset.for === "cond" && action === "pin");
      });
    };
    f("action").addEventListener("change", showFields);
    showFields();
    const reset = () => {
      form.reset();
      f("id").value = "";
      f("editor").value = saved.get(EDITOR, "");
      $("#rule-save").textContent = "Add rule";
      $("#rule-cancel").hidden = true;
      showFields();
    };
    $("#rule-cancel").addEventListener("click", reset);
    const edit = (r) => {
      reset();
      f("id").value = r.id;
      for (const k of ["name", "action", "slot", "brand", "category", "min_price", "max_price", "strength"]) f(k).value = r[k] ?? "";
      f("item_ids").value = r.item_ids.join(", ");
      f("attr_key").value = r.attribute ? r.attribute.key : "";
      f("attr_value").value = r.attribute ? r.attribute.value : "";
      f("start").value = toInput(r.start);
      f("end").value = toInput(r.end);
      $$("input[name=placements]", form).forEach((b) => { b.checked = r.placements.includes(b.value); });
      $$("input[name=variants]", form).forEach((b) => { b.checked = r.variants.includes(b.value); });
      f("enabled").checked = r.enabled;
      $("#rule-save").textContent = `Save rule #${r.id}`;
      $("#rule-cancel").hidden = false;
      showFields();
      form.scrollIntoView({ behavior: "smooth", block: "start" });
    };
    const renderRules = (list) => {
      $("#rule-list").innerHTML = list.length ? `<ul class="list rules" id="rules">${list.map((r) => `<li class="rule-row" data-rule="${r.id}">
          <span class="rule-id">#${r.id}</span>
          <span class="rule-body"><span class="rule-head"><b>${esc(r.name || r.action)}</b>
            <span class="etype ${r.live ? "purchase" : ""}">${r.live ? "live" : r.enabled ? "scheduled" : "off"}</span></span>
            <span class="s">${esc(ruleSummary(r))}</span>
            <span class="s">${r.placements.map((p) => `<span class="tag">${esc(PLACEMENT_TEXT[p] || p)}</span>`).join("")}
              ${r.variants.length ? `<span class="tag">variants: ${esc(r.variants.join(", "))}</span>` : ""}</span></span>
          <span class="rule-actions"><button class="btn btn-small" type="button" data-edit="${r.id}">Edit</button>
            <button class="btn btn-small btn-ghost" type="button" data-delete="${r.id}">Delete</button></span></li>`).join("")}</ul>`
        : empty("No rules yet", "Lists are exactly what the ranking chose. Add a rule on the left.");
      $$("[data-edit]").forEach((b) => b.addEventListener("click", () => edit(list.find((r) => r.id === Number(b.dataset.edit)))));
      $$("[data-delete]").forEach((b) => b.addEventListener("click", async () => {
        await api(`/rules/${b.dataset.delete}?editor=${enc(saved.get(EDITOR, ""))}`, { method: "DELETE" });
        toast(`Rule #${b.dataset.delete} deleted`);
        refresh();
      }));
    };
    const refresh = async () => {
      const [book, audit] = await Promise.all([api("/rules"), api("/rules/audit?limit=30")]);
      if (!form.isConnected) return;  // the merchandiser went to another page meanwhile
      rules = book.rules;
      renderRules(rules);
      $("#audit-list").innerHTML = audit.entries.length ? audit.entries.map((e) => `<li class="audit-row"><span class="etype ${e.action === "delete" ? "" : "purchase"}">${e.action}</span>
          <span><b>#${e.rule_id}</b> ${esc((e.after || e.before) ? ruleSummary(e.after || e.before) : "")}</span>
          <span class="s">${esc(e.actor)} · ${when(e.ts)}</span></li>`).join("") : `<li class="hint">No changes yet.</li>`;
      preview();
    };
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const num = (n) => (f(n).value === "" ? null : Number(f(n).value));
      const text = (n) => f(n).value.trim() || null;
      const body = {
        name: f("name").value.trim(), action: f("action").value,
        placements: $$("input[name=placements]:checked", form).map((b) => b.value),
        item_ids: f("item_ids").value.split(",").map((x) => x.trim()).filter(Boolean),
        slot: num("slot") || 1, brand: text("brand"), category: text("category"),
        attribute: text("attr_key") && text("attr_value") ? { key: text("attr_key"), value: text("attr_value") } : null,
        min_price: num("min_price"), max_price: num("max_price"), strength: num("strength") || 0.5,
        start: fromInput(f("start").value), end: fromInput(f("end").value),
        variants: $$("input[name=variants]:checked", form).map((b) => b.value), enabled: f("enabled").checked,
        editor: f("editor").value.trim(),
      };
      if (body.action !== "pin") body.slot = 1;
      saved.set(EDITOR, body.editor);
      const id = f("id").value;
      try {
        const rule = await api(id ? `/rules/${id}` : "/rules", { method: id ? "PUT" : "POST", body });
        $("#rule-error").textContent = "";
        toast(id ? `Rule #${rule.id} saved` : `Rule #${rule.id} added: it applies now`);
        reset();
        refresh();
      } catch (e) {
        $("#rule-error").textContent = needsKey(e) ? "Editing rules needs an admin key (Console → API key)." : e.message;
      }
    });
    const preview = async () => {
      const kind = $("#preview-kind").value, value = $("#preview-input").value.trim();
      const url = { search: `/search?q=${enc(value)}&k=8`, similar: `/items/${enc(value)}/similar?k=8`, home: `/users/${enc(value)}/recommendations?k=8`,
        also: `/items/${enc(value)}/also-bought?k=8`, trending: `/trending?k=8${value ? `&category=${enc(value)}` : ""}` }[kind];
      const slot = $("#preview-list");
      if (!value && kind !== "trending") { slot.innerHTML = ""; return; }
      try {
        const data = await api(url);
        if (!slot.isConnected) return;
        slot.innerHTML = data.results.map((r, i) => rowItem(r, { list: listId("preview"),
          sub: ruleBadges(r) + `<span>${esc(r.brand || "")}</span>`
            + (kind === "search" ? ` <span class="kv">${r.relevance == null ? "pinned" : relevanceText(r.relevance)}</span>` : ""),
          right: `#${i + 1}` })).join("") || `<li class="hint">No results.</li>`;
      } catch (e) { slot.innerHTML = `<li class="hint error">${esc(e.message)}</li>`; }
    };
    $("#preview-form").addEventListener("submit", (ev) => { ev.preventDefault(); preview(); });
    renderRules(rules);
    refresh();
  }

  // ---- router ----------------------------------------------------------------------------------
  function show(name, html) {
    main.dataset.view = name;
    main.setAttribute("aria-busy", "true");
    main.innerHTML = html;
  }

  async function route() {
    const token = ++state.token;
    const raw = location.hash.replace(/^#/, "") || "/";
    const [path, qs] = raw.split("?");
    const parts = path.split("/").filter(Boolean).map((p) => { try { return decodeURIComponent(p); } catch { return p; } });
    const params = new URLSearchParams(qs || "");
    const name = { search: "search", c: "category", item: "item", console: "console", merch: "merch" }[parts[0]] || (parts.length ? "missing" : "home");
    closeSuggest();
    if (name !== "search") input.value = "";
    markNav(name, parts);
    let view;
    try {
      view = name === "missing" ? { html: empty("Page not found", `<a href="#/">Back to the shop</a>`) }
        : name === "home" ? await views.home() : name === "search" ? await views.search(params)
          : name === "category" ? await views.category(parts, params) : name === "item" ? await views.item(parts)
            : name === "merch" ? await views.merch() : await views.console(parts);
    } catch (e) {
      view = { html: empty("Something went wrong", esc(e.message)) };
    }
    if (token !== state.token) return; // a newer navigation won
    main.dataset.view = name;
    main.innerHTML = view.html;
    if (view.after) {
      try { view.after(); } catch (e) { console.error(e); }
    }
    main.setAttribute("aria-busy", "false");
    const heading = $("h1", main);
    const title = heading ? heading.textContent.trim() : "";
    document.title = (title && name !== "home" ? title + " · " : "") + "Semrec Market";
    announce(name === "home" ? "Your feed is ready" : title || "Page loaded");
    if (name !== "search") window.scrollTo(0, 0);
    if (state.navigated && document.activeElement !== input) main.focus({ preventScroll: true });
    state.navigated = true;
  }

  function announce(text) {
    const el = $("#announce");
    el.textContent = "";
    setTimeout(() => { el.textContent = text; }, 50);
  }

  function markNav(name, parts) {
    $$(".mainnav a").forEach((a) => {
      const current = a.dataset.nav === ({ console: "console", merch: "merch" }[name] || "shop");
      a.setAttribute("aria-current", current ? "page" : "false");
    });
    $$("#catbar a").forEach((a) => a.setAttribute("aria-current", name === "category" && a.dataset.cat === parts[1] ? "page" : "false"));
  }

  // ---- header: shopper switcher, categories --------------------------------------------------
  function setUser(id, reroute = true) {
    state.user = id;
    saved.set(KEY.user, id);
    $("#who-name").textContent = displayName(id);
    const av = $("#who-avatar");
    av.textContent = avatarText(id);
    av.style.background = avatarColor(id);
    $("#who-btn").setAttribute("aria-label", `Shopping as ${displayName(id)}; switch shopper`);
    banner("");
    if (reroute) route();
  }

  function wireWho() {
    const btn = $("#who-btn"), menu = $("#who-menu");
    const close = () => { menu.hidden = true; btn.setAttribute("aria-expanded", "false"); };
    btn.addEventListener("click", async () => {
      menu.hidden = !menu.hidden;
      btn.setAttribute("aria-expanded", String(!menu.hidden));
      if (menu.hidden) return;
      $("#who-input").value = /^visitor-/.test(state.user) ? "" : state.user;
      $("#who-input").focus();
      if (!state.shoppers) {
        try { state.shoppers = (await api("/shoppers")).shoppers; } catch { state.shoppers = []; }
      }
      $("#who-options").innerHTML = state.shoppers.map((s) => `<option value="${esc(s.user_id)}">${esc(s.top_categories.join(", "))}</option>`).join("");
    });
    $("#who-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const id = $("#who-input").value.trim();
      if (!id) return;
      close();
      setUser(id);
    });
    $("#who-new").addEventListener("click", () => { close(); setUser(newVisitorId()); location.hash = "#/"; });
    document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && !menu.hidden) { close(); btn.focus(); } });
    document.addEventListener("click", (ev) => { if (!menu.hidden && !ev.target.closest(".who")) close(); });
  }

  async function loadCategories() {
    try {
      state.categories = (await api("/categories")).categories;
    } catch { state.categories = []; }
    $("#catbar").innerHTML = state.categories.map((c) => `<a href="#/c/${enc(c.name)}" data-cat="${esc(c.name)}">${esc(c.name)}</a>`).join("");
  }

  // ---- search box with suggestions (ARIA combobox) ------------------------------------------------
  const input = $("#q"), list = $("#suggest-list");
  let suggestions = [], active = -1, timer = 0, inflight = null;

  function closeSuggest() {
    list.hidden = true;
    list.innerHTML = "";
    suggestions = [];
    active = -1;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  }
  function highlight(text, q) {
    const i = text.toLowerCase().indexOf(q.toLowerCase());
    return i < 0 ? esc(text) : esc(text.slice(0, i)) + "<mark>" + esc(text.slice(i, i + q.length)) + "</mark>" + esc(text.slice(i + q.length));
  }
  async function fetchSuggestions() {
    const q = input.value.trim();
    if (!q) { closeSuggest(); return; }
    if (inflight) inflight.abort();
    inflight = new AbortController();
    try {
      const data = await api(`/suggest?q=${enc(q)}&k=8`, { signal: inflight.signal });
      if (input.value.trim() !== q || document.activeElement !== input) return;
      const raw = Array.isArray(data) ? data : data.suggestions || [];
      suggestions = raw.map((s) => (typeof s === "string" ? { text: s, kind: "" } : s)).filter((s) => s.text);
      active = -1;
      list.innerHTML = suggestions.map((s, i) => `<li id="suggestion-${i}" role="option" aria-selected="false" data-index="${i}">
        <span class="s-text">${highlight(s.text, q)}</span><span class="s-kind">${esc(s.kind || "")}</span></li>`).join("");
      list.hidden = !suggestions.length;
      input.setAttribute("aria-expanded", String(!!suggestions.length));
      input.removeAttribute("aria-activedescendant");
    } catch (e) {
      if (e.name !== "AbortError") closeSuggest();
    }
  }
  function setActive(i) {
    active = i;
    $$("li", list).forEach((li, n) => li.setAttribute("aria-selected", String(n === i)));
    if (i >= 0) {
      input.setAttribute("aria-activedescendant", `suggestion-${i}`);
      $(`#suggestion-${i}`).scrollIntoView({ block: "nearest" });
    } else input.removeAttribute("aria-activedescendant");
  }
  function choose(s) {
    input.value = s.text;
    closeSuggest();
    location.hash = s.kind === "category" ? `#/c/${enc(s.text)}` : `#/search?q=${enc(s.text)}`;
  }
  input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(fetchSuggestions, 110); });
  input.addEventListener("keydown", (ev) => {
    const open = !list.hidden && suggestions.length;
    if (ev.key === "ArrowDown") {
      ev.preventDefault();
      if (!open) { fetchSuggestions(); return; }
      setActive((active + 1) % suggestions.length);
    } else if (ev.key === "ArrowUp") {
      if (!open) return;
      ev.preventDefault();
      setActive(active <= 0 ? suggestions.length - 1 : active - 1);
    } else if (ev.key === "Enter" && open && active >= 0) {
      ev.preventDefault();
      choose(suggestions[active]);
    } else if (ev.key === "Escape" && open) {
      ev.preventDefault();
      closeSuggest();
    } else if (ev.key === "Tab") {
      closeSuggest();
    }
  });
  input.addEventListener("blur", () => setTimeout(() => { if (document.activeElement !== input) closeSuggest(); }, 150));
  list.addEventListener("mousedown", (ev) => ev.preventDefault()); // keep focus in the input
  list.addEventListener("click", (ev) => {
    const li = ev.target.closest("li[data-index]");
    if (li) choose(suggestions[Number(li.dataset.index)]);
  });
  $("#search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = input.value.trim();
    clearTimeout(timer);
    closeSuggest();
    if (!q) return;
    const target = `#/search?q=${enc(q)}`;
    if (location.hash === target) route(); else location.hash = target;
  });

  // ---- start -----------------------------------------------------------------------------------
  window.addEventListener("hashchange", route);
  wireWho();
  setUser(state.user, false);
  loadCategories().then(route);
})();
