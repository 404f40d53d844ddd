// Run once, when the engine starts (in the host's setup, before its
// snapshot). It receives the native functions and defines the globals every
// turn sees: console, print, call_tool, ToolError. Whatever it uses is
// captured here, so that code which replaces JSON or String.prototype later
// does not break printing or the tool door.
(function (write, door) {
  "use strict";
  const stringify = JSON.stringify;
  const parse = JSON.parse;
  const toStringTag = Object.prototype.toString;
  const ErrorClass = Error;
  const join = Array.prototype.join;
  const map = Array.prototype.map;
  const call = Function.prototype.call;
  const isArray = Array.isArray;

  // JSON that also shows what JSON drops or refuses.
  function replacer(seen) {
    return function (key, value) {
      switch (typeof value) {
        case "bigint":
          return `${value}n`;
        case "function":
          return `[Function ${value.name || "(anonymous)"}]`;
        case "symbol":
          return value.toString();
        case "undefined":
          return isArray(this) ? null : undefined;
        case "object":
          if (value === null) return value;
          if (value instanceof ErrorClass) return `${value.name}: ${value.message}`;
          if (seen.has(value)) return "[Circular]";
          seen.add(value);
          return value;
        default:
          return value;
      }
    };
  }

  function format(value) {
    switch (typeof value) {
      case "string":
        return value;
      case "function":
        return `[Function ${value.name || "(anonymous)"}]`;
      case "symbol":
        return value.toString();
      case "bigint":
        return `${value}n`;
      case "object": {
        if (value === null) return "null";
        if (value instanceof ErrorClass) return `${value.name}: ${value.message}`;
        let text;
        try {
          text = stringify(value, replacer(new Set()));
        } catch (_) {
          text = undefined;
        }
        return text === undefined ? call.call(toStringTag, value) : text;
      }
      default:
        return String(value);
    }
  }

  function line(args) {
    return call.call(join, call.call(map, args, (v) => format(v)), " ") + "\n";
  }

  function out(...args) {
    write(1, line(args));
  }
  function err(...args) {
    write(2, line(args));
  }

  const console = {
    log: out,
    info: out,
    debug: out,
    error: err,
    warn: err,
  };

  class ToolError extends ErrorClass {
    constructor(kind, message) {
      super(message);
      this.name = "ToolError";
      this.kind = kind;
    }
  }

  let nextId = 0;
  function call_tool(name, args = {}) {
    nextId += 1;
    const id = nextId;
    const frame = stringify({ v: 1, id, op: "call", tool: String(name), args });
    const answer = door(frame);
    if (typeof answer === "number") {
      throw new ErrorClass(`the tool door failed (status ${answer})`);
    }
    const reply = parse(answer);
    if (reply !== null && typeof reply === "object" && reply.ok === true) {
      return reply.value;
    }
    const error = (reply && reply.error) || {};
    throw new ToolError(
      String(error.kind ?? "protocol"),
      String(error.message ?? "the tool answered with a malformed frame"),
    );
  }

  const define = (name, value) =>
    Object.defineProperty(globalThis, name, {
      value,
      writable: true,
      configurable: true,
      enumerable: false,
    });
  define("console", console);
  define("print", out);
  define("call_tool", call_tool);
  define("ToolError", ToolError);
});
