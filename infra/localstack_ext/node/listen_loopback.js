// Preloaded into every Node process LocalStack starts (NODE_OPTIONS=--require ...): kinesis-local listens on
// 0.0.0.0 and has no option to change it, so every server is bound to 127.0.0.1 instead of all interfaces.
"use strict";
const net = require("net");

const WILDCARDS = new Set([undefined, null, "", "0.0.0.0", "::", "::0"]);
const listen = net.Server.prototype.listen;

net.Server.prototype.listen = function listenOnLoopback(...args) {
  const [first] = args;
  if (first !== null && typeof first === "object" && !Array.isArray(first)) {
    // listen(options[, callback]): a unix socket path needs no host
    if (first.path === undefined && WILDCARDS.has(first.host)) {
      args[0] = { ...first, host: "127.0.0.1" };
    }
  } else if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    // listen(port[, host][, backlog][, callback])
    if (typeof args[1] === "string" && !WILDCARDS.has(args[1])) {
      return listen.apply(this, args);
    }
    if (args.length > 1 && (typeof args[1] === "string" || args[1] === undefined || args[1] === null)) {
      args[1] = "127.0.0.1";
    } else {
      args.splice(1, 0, "127.0.0.1");
    }
  } else if (first === undefined || typeof first === "function") {
    // listen([callback]): a random port on every interface
    args.unshift(0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
