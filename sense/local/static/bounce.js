// Arrived by a login: keep the session's key, in this origin's storage only (another port
// of this host gets the cookie, never the key). Arrived by a link from another site: the
// browser left the SameSite=Strict cookie out. Either way, "/" asked from this page comes
// with the cookie (or shows the login form), and the address with a code or token in it goes.
"use strict";
const key = document.querySelector("meta[name=sense-csrf]");
if (key) {
  localStorage.setItem("sense-csrf", key.content);
}
window.location.replace("/");
