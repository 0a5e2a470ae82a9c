// The page's model, as `lenet5 serve` gives it: none, so app.js reads through the server.
// `lenet5 export --format web` writes this file with the weights in it, and the page reads alone.
window.LENET5_MODEL = null;
