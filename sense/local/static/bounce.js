// Arrived by a link from another site: the browser left the SameSite=Strict cookie out.
// The same address, asked from this page, comes with it (or shows the login form).
window.location.replace("/");
