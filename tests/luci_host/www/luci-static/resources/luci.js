/*
 * A small stand-in for LuCI's client runtime (luci-base luci.js), written for the
 * wormhole browser tests. It provides only the surface the wormhole views use and
 * keeps the semantics of the real one where a view can observe them:
 *
 *  - Class.extend / singleton / super, and L.require('x.y') loading resources/x/y.js:
 *    the leading string statements ('use strict', 'require name [as alias]') name the
 *    dependencies, the source is compiled as a function of (window, document, L, deps…),
 *    it must return a class, and the loader keeps and returns an *instance* of it.
 *    'baseclass', 'dom', 'poll', 'request' and 'view' are built in, like upstream.
 *  - E()/dom.create/dom.append: an array child becomes text nodes, a bare string child
 *    becomes innerHTML (exactly why views must wrap untrusted text in arrays).
 *  - poll: a one-second ticker; poll.add(fn, interval) runs fn every `interval` ticks
 *    (default L.env.pollinterval) and never runs it again while its promise is pending.
 *  - view: __init__ runs load() then render(), puts the result into #view and appends
 *    the footer; the footer has Save/Apply/Reset only for handlers that are not null.
 *  - L.resolveDefault(p, d): p, or d when p rejects.
 *
 * Nothing here is copied from LuCI; it is written from its documented behaviour.
 */
(function(window, document) {
	'use strict';

	/* --- classes ------------------------------------------------------------- */

	var superContext = null;

	function Class() {}

	Class.extend = function(properties) {
		var base = this, props = {
			__base__: { value: base.prototype },
			__name__: { value: properties.__name__ || 'anonymous' }
		};

		var Ctor = function() {
			if (!(this instanceof Ctor))
				throw new TypeError('Constructor must not be called without "new"');

			if (Object.getPrototypeOf(this).hasOwnProperty('__init__')) {
				if (typeof this.__init__ != 'function')
					throw new TypeError('Class __init__ member is not a function');
				this.__init__.apply(this, arguments);
			}
			else {
				this.super('__init__', arguments);
			}
		};

		for (var key in properties)
			if (!props[key] && properties.hasOwnProperty(key))
				props[key] = { value: properties[key], writable: true };

		Ctor.prototype = Object.create(base.prototype, props);
		Ctor.prototype.constructor = Ctor;
		Object.assign(Ctor, base);
		return Ctor;
	};

	Class.singleton = function(properties) {
		var C = Class.extend.call(this, properties);
		return new C();
	};

	Class.isSubclass = function(cls) {
		return cls != null && typeof cls == 'function' && cls.prototype instanceof this;
	};

	Class.prototype = {
		varargs: function(args, offset) {
			return Array.prototype.slice.call(arguments, 2)
				.concat(Array.prototype.slice.call(args, offset));
		},

		super: function(key, callArgs) {
			for (superContext = Object.getPrototypeOf(superContext || Object.getPrototypeOf(this));
			     superContext && !superContext.hasOwnProperty(key);
			     superContext = Object.getPrototypeOf(superContext)) { }

			if (!superContext)
				return null;

			var res = superContext[key];

			if (arguments.length > 1) {
				if (typeof res != 'function')
					throw new ReferenceError(key + ' is not a function in base class');
				if (typeof callArgs != 'object')
					callArgs = this.varargs(arguments, 1);
				res = res.apply(this, callArgs);
			}

			superContext = null;
			return res;
		}
	};

	/* --- String.prototype.format (the subset of upstream's directives) -------- */

	var htmlEscape = function(s) {
		return String(s).replace(/[&<>"']/g, function(c) {
			return '&#' + c.charCodeAt(0) + ';';
		});
	};

	if (!String.prototype.format) {
		String.prototype.format = function() {
			var args = arguments, i = 0;
			return this.replace(/%(%|(-?)(0?)(\d*)(?:\.(\d+))?([sdfhqxX]))/g,
				function(m, all, left, zero, width, prec, conv) {
					if (all == '%')
						return '%';
					var v = args[i++], s;
					switch (conv) {
					case 's': s = (v == null) ? '' : String(v); break;
					case 'd': s = String(Math.trunc(+v || 0)); break;
					case 'f': s = (+v || 0).toFixed(prec != null ? +prec : 6); break;
					case 'h': s = htmlEscape(v == null ? '' : v); break;
					case 'q': s = String(v == null ? '' : v).replace(/[\\"']/g, '\\$&'); break;
					case 'x': s = (+v >>> 0).toString(16); break;
					case 'X': s = (+v >>> 0).toString(16).toUpperCase(); break;
					}
					if (width && s.length < +width) {
						var pad = Array(+width - s.length + 1).join(zero ? '0' : ' ');
						s = left ? s + pad : pad + s;
					}
					return s;
				});
		};
	}

	/* --- DOM ------------------------------------------------------------------ */

	var DOM = Class.singleton({
		__name__: 'LuCI.dom',

		elem: function(e) {
			return e != null && typeof e == 'object' && 'nodeType' in e;
		},

		parse: function(s) {
			var t = document.createElement('template');
			t.innerHTML = s;
			return t.content.firstChild;
		},

		matches: function(node, selector) {
			return this.elem(node) && node.matches ? node.matches(selector) : false;
		},

		parent: function(node, selector) {
			return this.elem(node) && node.closest ? node.closest(selector) : null;
		},

		append: function(node, children) {
			if (!this.elem(node))
				return null;

			if (Array.isArray(children)) {
				for (var i = 0; i < children.length; i++)
					if (this.elem(children[i]))
						node.appendChild(children[i]);
					else if (children[i] !== null && children[i] !== undefined)
						node.appendChild(document.createTextNode('' + children[i]));
				return node.lastChild;
			}
			else if (typeof children == 'function') {
				return this.append(node, children(node));
			}
			else if (this.elem(children)) {
				return node.appendChild(children);
			}
			else if (children !== null && children !== undefined) {
				/* upstream: a bare string is markup */
				node.innerHTML = '' + children;
				return node.lastChild;
			}
			return null;
		},

		content: function(node, children) {
			if (!this.elem(node))
				return null;
			while (node.firstChild)
				node.removeChild(node.firstChild);
			return this.append(node, children);
		},

		attr: function(node, key, val) {
			if (!this.elem(node))
				return null;

			var attr = null;
			if (typeof key == 'object' && key !== null)
				attr = key;
			else if (typeof key == 'string')
				attr = {}, attr[key] = val;

			for (key in attr) {
				if (!attr.hasOwnProperty(key) || attr[key] == null)
					continue;
				switch (typeof attr[key]) {
				case 'function':
					node.addEventListener(key, attr[key]);
					break;
				case 'object':
					node.setAttribute(key, JSON.stringify(attr[key]));
					break;
				default:
					node.setAttribute(key, attr[key]);
				}
			}
		},

		create: function() {
			var html = arguments[0],
			    attr = arguments[1],
			    data = arguments[2],
			    elem;

			if (!(attr instanceof Object) || Array.isArray(attr))
				data = attr, attr = null;

			if (Array.isArray(html)) {
				elem = document.createDocumentFragment();
				for (var i = 0; i < html.length; i++)
					elem.appendChild(this.create(html[i]));
			}
			else if (this.elem(html)) {
				elem = html;
			}
			else if (html.charCodeAt(0) === 60) {
				elem = this.parse(html);
			}
			else {
				elem = document.createElement(html);
			}

			if (!elem)
				return null;

			this.attr(elem, attr);
			this.append(elem, data);
			return elem;
		},

		isEmpty: function(node) {
			return !this.elem(node) || !node.firstElementChild;
		}
	});

	/* --- poll ----------------------------------------------------------------- */

	var Poll = Class.singleton({
		__name__: 'LuCI.poll',

		queue: [],

		add: function(fn, interval) {
			if (interval == null || interval <= 0)
				interval = L.env.pollinterval;

			if (isNaN(interval) || typeof fn != 'function')
				throw new TypeError('Invalid argument to LuCI.poll.add()');

			for (var i = 0; i < this.queue.length; i++)
				if (this.queue[i].fn === fn)
					return false;

			this.queue.push({ r: true, i: interval >>> 0, fn: fn });

			if (this.tick != null && !this.active())
				this.start();

			return true;
		},

		remove: function(fn) {
			var len = this.queue.length;
			this.queue = this.queue.filter(function(e) { return e.fn !== fn });
			if (!this.queue.length)
				this.stop();
			return this.queue.length != len;
		},

		start: function() {
			if (this.active())
				return false;
			this.tick = 0;
			if (this.queue.length) {
				this.timer = window.setInterval(this.step, 1000);
				this.step();
				document.dispatchEvent(new CustomEvent('poll-start'));
			}
			return true;
		},

		stop: function() {
			if (!this.active())
				return false;
			document.dispatchEvent(new CustomEvent('poll-stop'));
			window.clearInterval(this.timer);
			delete this.timer;
			delete this.tick;
			return true;
		},

		step: function() {
			for (var i = 0, e = null; (e = Poll.queue[i]) != null; i++) {
				if ((Poll.tick % e.i) != 0 || !e.r)
					continue;
				e.r = false;
				Promise.resolve(e.fn()).finally((function() { this.r = true }).bind(e));
			}
			Poll.tick = (Poll.tick + 1) % Math.pow(2, 32);
		},

		active: function() {
			return this.timer != null;
		}
	});

	/* --- request -------------------------------------------------------------- */

	var Response = Class.extend({
		__name__: 'LuCI.response',
		__init__: function(xhr, url) {
			this.ok = xhr.status >= 200 && xhr.status <= 299;
			this.status = xhr.status;
			this.statusText = xhr.statusText;
			this.url = url;
			this.responseText = xhr.responseText;
		},
		json: function() { return JSON.parse(this.responseText) },
		text: function() { return this.responseText }
	});

	var Request = Class.singleton({
		__name__: 'LuCI.request',

		request: function(url, options) {
			options = options || {};
			return new Promise(function(resolveFn, rejectFn) {
				var xhr = new XMLHttpRequest(), content = null;
				xhr.open(String(options.method || 'GET').toUpperCase(), url, true);
				xhr.responseType = 'text';
				if ('timeout' in options)
					xhr.timeout = +options.timeout;
				if (options.content != null && typeof options.content == 'object') {
					content = JSON.stringify(options.content);
					xhr.setRequestHeader('Content-Type', 'application/json');
				}
				else if (options.content != null) {
					content = String(options.content);
				}
				xhr.onreadystatechange = function() {
					if (xhr.readyState !== 4)
						return;
					if (xhr.status === 0 && xhr.statusText === '')
						rejectFn(new Error('XHR request aborted by browser'));
					else
						resolveFn(new Response(xhr, url));
				};
				xhr.send(content);
			});
		},

		get: function(url, options) {
			return this.request(url, Object.assign({ method: 'GET' }, options));
		},

		post: function(url, data, options) {
			return this.request(url, Object.assign({ method: 'POST', content: data }, options));
		}
	});

	/* --- view ----------------------------------------------------------------- */

	var View = Class.extend({
		__name__: 'LuCI.view',

		__init__: function() {
			var vp = document.getElementById('view');
			DOM.content(vp, E('div', { 'class': 'spinning' }, [ _('Loading view…') ]));

			return Promise.resolve(this.load())
				.then(L.bind(this.render, this))
				.then(L.bind(function(nodes) {
					var vp = document.getElementById('view');
					DOM.content(vp, nodes);
					DOM.append(vp, this.addFooter());
				}, this)).catch(L.error);
		},

		load: function() {},
		render: function() {},

		handleSave: function() { return Promise.resolve() },
		handleSaveApply: function() { return Promise.resolve() },
		handleReset: function() { return Promise.resolve() },

		addFooter: function() {
			var footer = E([]), buttons = [];
			if (this.handleSaveApply)
				buttons.push(E('button', { 'class': 'cbi-button cbi-button-apply',
					'click': L.bind(this.handleSaveApply, this) }, [ _('Save & Apply') ]));
			if (this.handleSave)
				buttons.push(E('button', { 'class': 'cbi-button cbi-button-save',
					'click': L.bind(this.handleSave, this) }, [ _('Save') ]));
			if (this.handleReset)
				buttons.push(E('button', { 'class': 'cbi-button cbi-button-reset',
					'click': L.bind(this.handleReset, this) }, [ _('Reset') ]));
			if (buttons.length)
				footer.appendChild(E('div', { 'class': 'cbi-page-actions' }, buttons));
			return footer;
		}
	});

	/* --- L -------------------------------------------------------------------- */

	var classes = {
		baseclass: Class,
		dom: DOM,
		poll: Poll,
		request: Request,
		view: View
	};

	var LuCI = Class.extend({
		__name__: 'LuCI',

		__init__: function(env) {
			this.env = Object.assign({ pollinterval: 5 }, env);
			window.L = this;
			var self = this;
			document.addEventListener('DOMContentLoaded', function() {
				Promise.all([ self.require('ui'), self.require('rpc') ]).then(function() {
					Poll.start();
					document.dispatchEvent(new CustomEvent('luci-loaded'));
				}).catch(self.error);
			});
		},

		Class: Class,
		dom: DOM,
		Poll: Poll,
		Request: Request,
		view: View,

		bind: function(fn, self) {
			return Function.prototype.bind.apply(fn, this.varargs(arguments, 2, self));
		},

		isObject: function(val) {
			return val != null && typeof val == 'object';
		},

		toArray: function(val) {
			if (val == null)
				return [];
			if (Array.isArray(val))
				return val;
			if (typeof val == 'object')
				return [ val ];
			var s = String(val).trim();
			return s == '' ? [] : s.split(/\s+/);
		},

		resolveDefault: function(value, defvalue) {
			return Promise.resolve(value).catch(function() { return defvalue });
		},

		path: function(prefix, parts) {
			var url = [ prefix || '' ];
			for (var i = 0; i < parts.length; i++)
				if (/^(?:[a-zA-Z0-9_.%,;-]+\/)*[a-zA-Z0-9_.%,;-]+$/.test(parts[i]))
					url.push('/', parts[i]);
			if (url.length === 1)
				url.push('/');
			return url.join('');
		},

		url: function() { return this.path(this.env.scriptname, arguments) },
		resource: function() { return this.path(this.env.resource, arguments) },

		raise: function(type, fmt) {
			var msg = fmt ? String.prototype.format.apply(fmt, this.varargs(arguments, 2)) : null,
			    e = new Error(msg || 'Unspecified error');
			e.name = type || 'Error';
			throw e;
		},

		error: function(type, fmt) {
			try {
				if (type instanceof Error)
					throw type;
				L.raise.apply(L, Array.prototype.slice.call(arguments));
			}
			catch (e) {
				var vp = document.getElementById('view') || document.body;
				DOM.content(vp, E('pre', { 'class': 'alert-message error' },
					[ (e.name || 'Error') + ': ' + e.message ]));
				throw e;
			}
		},

		require: function(name, from) {
			var self = this, url;
			from = from || [];

			if (classes[name] != null) {
				if (from.indexOf(name) != -1)
					self.raise('DependencyError', 'Circular dependency: class "%s" depends on "%s"',
						name, from.join('" which depends on "'));
				return Promise.resolve(classes[name]);
			}

			url = '%s/%s.js'.format(self.env.base_url, name.replace(/\./g, '/'));
			from = [ name ].concat(from);

			classes[name] = Request.get(url).then(function(res) {
				if (!res.ok)
					self.raise('NetworkError', 'HTTP error %d while loading class file "%s"', res.status, url);
				return self.compileClass(name, res.text(), url, from);
			});

			return classes[name];
		},

		/* Leading string statements are directives; the first other token ends them. */
		parseDirectives: function(source) {
			var re = /^\s*(?:\/\/[^\n]*\n|\/\*[\s\S]*?\*\/)*\s*(['"])((?:(?!\1)[^\\\n]|\\.)*)\1\s*;?/,
			    out = [], m, rest = source;
			while ((m = re.exec(rest)) != null) {
				out.push(m[2]);
				rest = rest.substring(m[0].length);
			}
			return out;
		},

		compileClass: function(name, source, url, from) {
			var self = this, deps = [], argNames = [];

			self.parseDirectives(source).forEach(function(d) {
				var m = /^require[ \t]+(\S+)(?:[ \t]+as[ \t]+([a-zA-Z_]\S*))?$/.exec(d);
				if (m) {
					deps.push(self.require(m[1], from));
					argNames.push(m[2] || m[1].replace(/[^a-zA-Z0-9_]/g, '_'));
				}
				else if (!/^use[ \t]+strict$/.test(d)) {
					self.raise('SyntaxError', 'Unknown directive "%s" in %s', d, url);
				}
			});

			return Promise.all(deps).then(function(instances) {
				var factory = Function.apply(null, [ 'window', 'document', 'L' ].concat(argNames)
					.concat([ source + '\n//# sourceURL=' + url ]));
				var cls = factory.apply(factory, [ window, document, self ].concat(instances));

				if (!Class.isSubclass(cls))
					self.raise('TypeError', '"%s" factory yields invalid constructor', name);

				var instance = new cls();
				classes[name] = instance;
				return instance;
			});
		}
	});

	window.LuCI = LuCI;
	window.E = function() { return DOM.create.apply(DOM, arguments) };
	window._ = function(s) { return (window.TR && window.TR[s]) || s };
	window.N_ = function(n, s, p) { return n == 1 ? window._(s) : window._(p) };
})(window, document);
