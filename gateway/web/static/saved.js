// Saved questions in the browser's localStorage, one list per researcher.
//
// Why the browser and not a gateway table: a saved question is the researcher's own
// draft (criteria and the query JSON, no released number), so it needs no server
// storage, no migration and no new API; the gateway already keeps every question it
// ran with its result (GET /v1/queries/{id}). Re-running sends the saved JSON unchanged,
// so each site recognises the repeat and answers from its release cache, charging nothing.

const PREFIX = "varde.feasibility.saved.";

function key(researcher) {
  return PREFIX + researcher;
}

/** The saved questions of `researcher`, newest first. */
export function loadSaved(researcher) {
  try {
    const list = JSON.parse(localStorage.getItem(key(researcher)) || "[]");
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

function store(researcher, list) {
  localStorage.setItem(key(researcher), JSON.stringify(list));
}

/** Save (or replace, by name) a question: its form state and its exact query documents. */
export function saveQuestion(researcher, name, state, queries) {
  const list = loadSaved(researcher).filter((q) => q.name !== name);
  const entry = { id: crypto.randomUUID(), name, savedAt: new Date().toISOString(), state, queries };
  list.unshift(entry);
  store(researcher, list.slice(0, 50));
  return entry;
}

export function deleteSaved(researcher, id) {
  store(researcher, loadSaved(researcher).filter((q) => q.id !== id));
}
