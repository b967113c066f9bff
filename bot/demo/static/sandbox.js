// The Slack sandbox page: draws #climate from finished HTML fragments the sandbox server renders
// (bot/demo/render.py escapes everything), keeps it live with a long poll that returns only what
// changed, and sends clicks and typed commands back to the server, which signs them for the bot.
// A modal the bot opens for this person is drawn from server HTML too; its submit and close go
// back to the server, which sends the view_submission and says what the modal shows next.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const channelList = $("messages");
  const threadPane = $("thread");
  const threadList = $("thread-messages");
  const userSelect = $("user");
  const composer = $("composer");
  const messageBox = $("message-box");
  const toastBox = $("toast");
  const liveBadge = $("live");
  const dialog = $("confirm");
  const modalDialog = $("modal");

  const state = {
    user: null,
    since: 0, // the workspace revision this page has drawn
    instance: "", // which run of the sandbox that revision belongs to
    entries: new Map(), // key -> {key, ts, thread_ts, html}: everything this user can see
    nodes: new Map(), // key -> element in the channel list
    dismissed: new Set(),
    thread: null, // ts of the open thread
    generation: 0, // bumped on a user switch: answers for the previous user are dropped
    controller: null,
    permalinkBase: "",
    modalVersion: 0, // the newest modal state drawn: an older answer never brings one back
    modalViewId: null, // the view on screen, or null
  };

  // --- drawing ------------------------------------------------------------------------------

  const scratch = document.createElement("template");

  function toNode(html) {
    scratch.innerHTML = html;
    const node = scratch.content.firstElementChild;
    localizeTimes(node);
    return node;
  }

  function localizeTimes(root) {
    for (const time of root.querySelectorAll("time.sk-time")) {
      const when = new Date(time.dateTime);
      if (Number.isNaN(when.getTime())) continue;
      time.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      time.title = when.toLocaleString();
    }
  }

  // Slack timestamps ("1700000000.000100") have more digits than a double keeps: compare as text.
  function compareTs(a, b) {
    const [aSec, aFrac = ""] = String(a).split(".");
    const [bSec, bFrac = ""] = String(b).split(".");
    if (aSec.length !== bSec.length) return aSec.length - bSec.length;
    if (aSec !== bSec) return aSec < bSec ? -1 : 1;
    const x = aFrac.padEnd(6, "0");
    const y = bFrac.padEnd(6, "0");
    return x === y ? 0 : x < y ? -1 : 1;
  }

  // In the channel: messages, and thread replies also sent to the channel.
  const isTopLevel = (entry) => !entry.thread_ts || entry.thread_ts === entry.ts || entry.broadcast;
  const inThread = (entry, ts) => entry.key === ts || entry.thread_ts === ts;

  function nearBottom(element) {
    return element.scrollHeight - element.scrollTop - element.clientHeight < 80;
  }

  function clearAll() {
    state.entries.clear();
    state.nodes.clear();
    channelList.replaceChildren();
    threadList.replaceChildren();
  }

  // An answer to a click sits under the message clicked: it sorts with that message's ts.
  const sortTsOf = (node) => node.dataset.sortTs || node.dataset.ts;

  function insertSorted(node, ts) {
    let before = null;
    for (let child = channelList.lastElementChild; child; child = child.previousElementSibling) {
      if (compareTs(sortTsOf(child), ts) <= 0) break;
      before = child;
    }
    channelList.insertBefore(node, before);
  }

  // Put an answer right under the message it answers (after earlier answers to it); false when
  // that message is not in the channel list (then it goes where its own ts says).
  function placeAfterAnchor(node, entry) {
    const anchor = state.nodes.get(entry.after);
    if (!anchor || !anchor.parentNode) return false;
    let last = anchor;
    for (
      let next = anchor.nextElementSibling;
      next && next.dataset.after === entry.after && compareTs(next.dataset.ts, entry.ts) < 0;
      next = next.nextElementSibling
    ) {
      last = next;
    }
    node.dataset.after = entry.after;
    node.dataset.sortTs = sortTsOf(anchor);
    last.after(node);
    return true;
  }

  function apply(data) {
    const stickToBottom = data.full || nearBottom(channelList);
    if (data.full) clearAll();
    let threadChanged = false;
    for (const key of data.deleted) {
      const entry = state.entries.get(key);
      if (!entry) continue;
      state.entries.delete(key);
      state.nodes.get(key)?.remove();
      state.nodes.delete(key);
      if (state.thread && inThread(entry, state.thread)) threadChanged = true;
    }
    const appended = document.createDocumentFragment();
    const last = channelList.lastElementChild;
    let lastTs = last ? sortTsOf(last) : "0";
    const answers = []; // answers placed under a message, to scroll into sight
    for (const entry of data.messages) {
      if (state.dismissed.has(entry.key)) continue;
      state.entries.set(entry.key, entry);
      if (state.thread && inThread(entry, state.thread)) threadChanged = true;
      if (!isTopLevel(entry)) continue;
      const node = toNode(entry.html);
      const old = state.nodes.get(entry.key);
      state.nodes.set(entry.key, node);
      if (old) {
        if (old.dataset.after) node.dataset.after = old.dataset.after;
        if (old.dataset.sortTs) node.dataset.sortTs = old.dataset.sortTs;
        old.replaceWith(node);
      } else if (entry.after && placeAfterAnchor(node, entry)) {
        answers.push(node);
      } else if (compareTs(entry.ts, lastTs) >= 0) {
        appended.appendChild(node);
        lastTs = entry.ts;
      } else {
        insertSorted(node, entry.ts);
      }
    }
    channelList.appendChild(appended);
    state.since = data.revision;
    state.instance = data.instance;
    if (threadChanged) drawThread();
    // An answer to your click is what you are waiting for: it comes into sight, even when the
    // channel would otherwise follow its newest message.
    if (answers.length && !data.full) bringIntoSight(answers[answers.length - 1]);
    else if (stickToBottom) scrollToEnd(channelList);
    if (data.modal) drawModal(data.modal);
  }

  // Messages off screen are laid out lazily (content-visibility), so the list's height settles
  // only once the newest ones are drawn: follow it for a few frames.
  function scrollToEnd(element, frames = 6) {
    element.scrollTop = element.scrollHeight;
    if (frames > 0) requestAnimationFrame(() => scrollToEnd(element, frames - 1));
  }

  // Like scrollToEnd, followed for a few frames while lazily laid out messages settle.
  function bringIntoSight(node, frames = 3) {
    if (!node.isConnected) return;
    node.scrollIntoView({ block: "nearest" });
    if (frames > 0) requestAnimationFrame(() => bringIntoSight(node, frames - 1));
  }

  // --- threads ------------------------------------------------------------------------------

  function openThread(ts) {
    state.thread = ts;
    threadPane.hidden = false;
    drawThread(true);
  }

  function closeThread() {
    state.thread = null;
    threadPane.hidden = true;
    threadList.replaceChildren();
  }

  function drawThread(scroll = false) {
    const ts = state.thread;
    if (!ts) return;
    const stick = scroll || nearBottom(threadList);
    const byTs = (a, b) => compareTs(a.ts, b.ts);
    const all = [...state.entries.values()].filter(
      (entry) => entry.thread_ts === ts && entry.key !== ts,
    );
    // Answers to a click in the thread go under the message clicked, like in the channel.
    const here = new Set([ts, ...all.map((entry) => entry.key)]);
    const answersTo = new Map();
    const replies = [];
    for (const entry of all.sort(byTs)) {
      if (entry.after && entry.after !== entry.key && here.has(entry.after)) {
        if (!answersTo.has(entry.after)) answersTo.set(entry.after, []);
        answersTo.get(entry.after).push(entry);
      } else {
        replies.push(entry);
      }
    }
    const fragment = document.createDocumentFragment();
    const drawn = new Set();
    const draw = (entry, { parentNode = false, answer = false } = {}) => {
      if (drawn.has(entry.key)) return;
      drawn.add(entry.key);
      const node = toNode(entry.html);
      if (parentNode) node.classList.add("thread-parent");
      if (answer) node.dataset.after = entry.after;
      fragment.appendChild(node);
      for (const reply of answersTo.get(entry.key) ?? []) draw(reply, { answer: true });
    };
    const parent = state.entries.get(ts);
    if (parent) draw(parent, { parentNode: true });
    const count = replies.filter((entry) => !entry.key.startsWith("e")).length;
    const divider = document.createElement("div");
    divider.className = "thread-count";
    divider.textContent = count === 1 ? "1 reply" : `${count} replies`;
    fragment.appendChild(divider);
    for (const reply of replies) draw(reply);
    for (const waiting of answersTo.values()) for (const entry of waiting) draw(entry); // no parent
    threadList.replaceChildren(fragment);
    if (stick) threadList.scrollTop = threadList.scrollHeight;
  }

  // --- acting -------------------------------------------------------------------------------

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: state.user, ...body }),
    });
    let data = {};
    try {
      data = await response.json();
    } catch (err) {
      data = { ok: false, error: `HTTP ${response.status}` };
    }
    if (!response.ok && data.ok === undefined) data.ok = false;
    return data;
  }

  function askConfirm(confirm) {
    const part = (name) => confirm.querySelector(name)?.innerHTML ?? "";
    $("confirm-title").innerHTML = part(".sk-confirm-title");
    $("confirm-text").innerHTML = part(".sk-confirm-text");
    $("confirm-deny").innerHTML = part(".sk-confirm-deny");
    const yes = $("confirm-yes");
    yes.innerHTML = part(".sk-confirm-yes");
    const danger = confirm.querySelector(".sk-confirm-yes")?.classList.contains("sk-danger");
    yes.className = danger ? "sk-button sk-danger" : "sk-button sk-primary";
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), {
        once: true,
      });
      dialog.showModal();
    });
  }

  async function press(button) {
    const message = button.closest(".sk-msg");
    if (!message) return;
    const key = message.dataset.key;
    const entry = state.entries.get(key);
    const confirm = button.parentElement.querySelector(":scope > .sk-confirm");
    if (confirm && !(await askConfirm(confirm))) return; // "deny" sends nothing, as in Slack
    if (button.dataset.url) window.open(button.dataset.url, "_blank", "noopener,noreferrer");
    button.classList.add("sk-busy");
    button.disabled = true;
    try {
      const answer = await post("/sandbox/click", {
        key,
        block: Number(button.dataset.block),
        element: button.dataset.element,
        thread_ts: entry && entry.thread_ts && entry.thread_ts !== key ? entry.thread_ts : null,
        // Clicked in the open thread (its parent included): the answer only the clicker sees
        // is shown there, else in the channel.
        in_thread: threadList.contains(button) ? state.thread : null,
      });
      if (!answer.ok && answer.error) toast(answer.error);
    } catch (err) {
      toast("The sandbox could not be reached.");
    } finally {
      button.classList.remove("sk-busy");
      button.disabled = false;
    }
  }

  // --- modals -------------------------------------------------------------------------------

  function drawModal(modal) {
    if (modal.version <= state.modalVersion) return; // an older state than the one on screen
    state.modalVersion = modal.version;
    if (!modal.view_id) {
      closeModalDialog();
      return;
    }
    const node = toNode(modal.html);
    modalDialog.replaceChildren(node);
    state.modalViewId = modal.view_id;
    if (!modalDialog.open) modalDialog.showModal();
    const focus =
      node.querySelector(".sk-input-invalid .sk-input-field") ||
      node.querySelector(".sk-input-field") ||
      node.querySelector(".sk-view-submit");
    focus?.focus();
  }

  function closeModalDialog() {
    state.modalViewId = null;
    if (modalDialog.open) modalDialog.close();
    modalDialog.replaceChildren();
  }

  function typedValues(form) {
    const values = {};
    for (const field of form.querySelectorAll(".sk-input-field")) {
      const block = field.dataset.blockId;
      values[block] = values[block] || {};
      values[block][field.dataset.actionId] = field.value;
    }
    return values;
  }

  async function modalRequest(path, body, busyButton) {
    const generation = state.generation;
    if (busyButton) {
      busyButton.classList.add("sk-busy");
      busyButton.disabled = true;
    }
    try {
      const answer = await post(path, body);
      if (generation !== state.generation) return; // switched user meanwhile
      if (answer.modal) drawModal(answer.modal);
      else if (!answer.ok) {
        toast(answer.error || "That did not work.");
        if (answer.error && /no longer open/.test(answer.error)) closeModalDialog();
      }
    } catch (err) {
      toast("The sandbox could not be reached.");
    } finally {
      if (busyButton && busyButton.isConnected) {
        busyButton.classList.remove("sk-busy");
        busyButton.disabled = false;
      }
    }
  }

  modalDialog.addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.target.closest("form.sk-view");
    if (!form) return;
    modalRequest(
      "/sandbox/submit",
      { view_id: form.dataset.viewId, values: typedValues(form) },
      form.querySelector(".sk-view-submit"),
    );
  });

  function closeModal() {
    const form = modalDialog.querySelector("form.sk-view");
    if (!form) {
      closeModalDialog();
      return;
    }
    modalRequest("/sandbox/close", { view_id: form.dataset.viewId }, null);
  }

  modalDialog.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    if (target.closest(".sk-view-close")) {
      event.preventDefault();
      closeModal();
    } else if (target.closest(".sk-button[data-action-id]")) {
      event.preventDefault();
      toast("Buttons inside a modal are not wired up in this sandbox.");
    }
  });
  modalDialog.addEventListener("cancel", (event) => {
    event.preventDefault(); // Escape closes the modal as its close button does
    closeModal();
  });

  async function send(event) {
    event.preventDefault();
    const text = messageBox.value.trim();
    if (!text) return;
    messageBox.value = "";
    scrollToEnd(channelList); // as in Slack: what you send, and its answer, show at the bottom
    try {
      const answer = await post("/sandbox/command", { text });
      if (!answer.ok && answer.error) toast(answer.error);
    } catch (err) {
      toast("The sandbox could not be reached.");
    }
  }

  function dismiss(key) {
    state.dismissed.add(key);
    const entry = state.entries.get(key);
    state.entries.delete(key);
    state.nodes.get(key)?.remove();
    state.nodes.delete(key);
    if (entry && state.thread && inThread(entry, state.thread)) drawThread();
  }

  // A link to a message of this workspace (a card link in an answer) scrolls to it.
  function jumpTo(href) {
    const url = new URL(href);
    const match = url.pathname.match(/\/p(\d+)(\d{6})$/);
    if (!match) return false;
    const ts = `${match[1]}.${match[2]}`;
    const threadTs = url.searchParams.get("thread_ts");
    if (threadTs) openThread(threadTs);
    const node = threadTs ? null : state.nodes.get(ts);
    if (!threadTs && !node) return false;
    if (node) {
      node.scrollIntoView({ block: "center", behavior: "smooth" });
      node.classList.add("sk-highlight");
      setTimeout(() => node.classList.remove("sk-highlight"), 2000);
    }
    return true;
  }

  let toastTimer = null;
  function toast(text) {
    toastBox.textContent = text;
    toastBox.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      toastBox.hidden = true;
    }, 5000);
  }

  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    const button = target.closest(".sk-msg .sk-button[data-action-id]");
    if (button) {
      event.preventDefault();
      press(button);
      return;
    }
    const replies = target.closest(".sk-replies");
    if (replies) {
      openThread(replies.dataset.thread);
      return;
    }
    const dismissButton = target.closest(".sk-dismiss");
    if (dismissButton) {
      dismiss(dismissButton.closest(".sk-msg").dataset.key);
      return;
    }
    const link = target.closest("a.sk-link");
    if (link && state.permalinkBase && link.href.startsWith(`${state.permalinkBase}/archives/`)) {
      if (jumpTo(link.href)) event.preventDefault();
    }
  });
  $("close-thread").addEventListener("click", closeThread);
  composer.addEventListener("submit", send);

  // --- who you are, and staying live -----------------------------------------------------------

  function setUser(id) {
    state.user = id;
    state.since = 0;
    state.dismissed.clear();
    state.generation += 1;
    state.modalVersion = 0;
    closeModalDialog(); // a modal is its person's: the next poll shows this person's, if any
    clearAll();
    if (state.controller) state.controller.abort();
    try {
      localStorage.setItem("sandbox-user", id);
    } catch (err) {
      // private browsing: the choice just is not remembered
    }
  }

  function setLive(live) {
    liveBadge.textContent = live ? "live" : "reconnecting…";
    liveBadge.classList.toggle("live-off", !live);
  }

  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function pollForever() {
    for (;;) {
      const generation = state.generation;
      const controller = new AbortController();
      state.controller = controller;
      try {
        const query = new URLSearchParams({
          user: state.user,
          since: state.since,
          instance: state.instance,
          wait: 25,
        });
        const response = await fetch(`/sandbox/changes?${query}`, {
          signal: controller.signal,
          cache: "no-store",
        });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const data = await response.json();
        if (generation !== state.generation) continue;
        apply(data);
        if (data.full) drawThread();
        setLive(true);
      } catch (err) {
        if (generation !== state.generation) continue; // switched user: start over at once
        setLive(false);
        await pause(1000);
      }
    }
  }

  async function boot() {
    const response = await fetch("/sandbox/workspace", { cache: "no-store" });
    const workspace = await response.json();
    state.permalinkBase = workspace.permalink_base;
    document.getElementById("transport").hidden = workspace.transport !== "socket_mode";
    for (const person of workspace.users) {
      const option = document.createElement("option");
      option.value = person.id;
      option.textContent = person.may_decide ? `${person.name} (may decide)` : person.name;
      userSelect.appendChild(option);
    }
    const known = new Set(workspace.users.map((person) => person.id));
    let wanted = new URLSearchParams(location.search).get("user");
    if (!known.has(wanted)) {
      try {
        wanted = localStorage.getItem("sandbox-user");
      } catch (err) {
        wanted = null;
      }
    }
    const first = known.has(wanted) ? wanted : workspace.default_user;
    userSelect.value = first;
    setUser(first);
    userSelect.addEventListener("change", () => setUser(userSelect.value));
    pollForever();
  }

  boot().catch(() => setLive(false));
})();
