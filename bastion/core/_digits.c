/* The masker's fast check for card-number-like digit runs.
 *
 * Hyperscan scans for every other trigger at several GB/s, but a digit-run pattern slows it to
 * under 1 GB/s on ordinary output (logs are full of digits), and most chunks hold no such run.
 * `digit_run(data, count)` is true wherever the card-number trigger can match: `count` digits,
 * consecutive ones at most one space or dash apart, which either hold a separator or, with
 * none, start and end at a word boundary (in raw output, a CSI escape sequence may end just
 * before them). It is a cheap necessary condition, not the trigger: a true answer sends the
 * chunk to the exact trigger.
 *
 * Such digits span at least `count` bytes of [0-9 -]: the loop probes the last byte of each
 * window of that length first, so most windows are passed over after looking at one byte.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

enum { OTHER = 0, SEPARATOR = 1, DIGIT = 2 };

static unsigned char kind[256]; /* digits, the separators, everything else */
static unsigned char word[256]; /* [0-9A-Za-z_] */

/* May a word start at s[i]: at the start, after a non-word byte, or right after a CSI sequence? */
static int
word_starts(const unsigned char *s, Py_ssize_t i)
{
    if (i == 0 || !word[s[i - 1]])
        return 1;
    if (s[i - 1] < 0x40 || s[i - 1] > 0x7e) /* not a CSI final byte */
        return 0;
    Py_ssize_t j = i - 2;
    while (j >= 0 && s[j] >= 0x20 && s[j] <= 0x3f) /* parameters and intermediates */
        j--;
    return j >= 1 && s[j] == '[' && s[j - 1] == 0x1b;
}

/* In s[start..end), all of [0-9 -]: digits enough, in a run with a separator or between boundaries? */
static int
run_qualifies(const unsigned char *s, Py_ssize_t n, Py_ssize_t start, Py_ssize_t end, Py_ssize_t count)
{
    Py_ssize_t i = start;
    while (i < end) {
        while (i < end && kind[s[i]] != DIGIT)
            i++;
        if (i == end)
            return 0;
        Py_ssize_t first = i, last = i, digits = 0;
        int separated = 0;
        while (i < end) {
            if (kind[s[i]] == DIGIT) {
                digits++;
                last = i++;
            } else if (i + 1 < end && kind[s[i + 1]] == DIGIT) {
                separated = 1; /* one separator between two digits */
                i++;
            } else {
                break;
            }
        }
        if (digits >= count
            && (separated || (word_starts(s, first) && (last + 1 == n || !word[s[last + 1]]))))
            return 1;
        i = last + 1;
    }
    return 0;
}

static int
has_digit_run(const unsigned char *s, Py_ssize_t n, Py_ssize_t count)
{
    Py_ssize_t start = 0; /* s[start - 1], when there is one, is not in [0-9 -] */
    while (start + count <= n) {
        Py_ssize_t last = start + count - 1;
        if (!kind[s[last]]) {
            start = last + 1;
            continue;
        }
        Py_ssize_t first = last;
        while (first > start && kind[s[first - 1]])
            first--;
        if (first > start) { /* s[first - 1] is not in the class: a window can start at `first` */
            start = first;
            continue;
        }
        Py_ssize_t end = last + 1; /* s[start..end) is a whole run of [0-9 -] */
        while (end < n && kind[s[end]])
            end++;
        if (run_qualifies(s, n, start, end, count))
            return 1;
        start = end + 1;
    }
    return 0;
}

static PyObject *
digit_run(PyObject *module, PyObject *args)
{
    Py_buffer data;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*n:digit_run", &data, &count))
        return NULL;
    int found = count <= 0 || has_digit_run((const unsigned char *)data.buf, data.len, count);
    PyBuffer_Release(&data);
    return PyBool_FromLong(found);
}

/* What a chunk of terminal output holds besides text and line ends, in one pass (see
 * `screen_flags` in masker.py for the meaning of each bit and the same check in Python). */
enum { UNDRAWN = 1, ESCAPE = 2, NON_ASCII = 4, MOVES = 8, CR = 16 };
static unsigned char flag[256];

static PyObject *
screen_flags(PyObject *module, PyObject *args)
{
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*:screen_flags", &data))
        return NULL;
    const unsigned char *s = (const unsigned char *)data.buf;
    Py_ssize_t n = data.len, i = 0;
    /* First a pass the compiler vectorises: any control other than LF and CR, any byte from
     * DEL up, any CR. Ordinary text (log lines, CR LF line ends) is answered there. */
    unsigned char odd = 0, cr = 0;
    for (i = 0; i < n; i++) {
        unsigned char x = s[i];
        odd |= (unsigned char)(((x < 0x20) & (x != '\n') & (x != '\r')) | (x >= 0x7f));
        cr |= (unsigned char)(x == '\r');
    }
    unsigned int a = 0, b = 0, c = 0, d = 0; /* four accumulators: no dependency chain */
    i = 0;
    if (!odd)
        a = cr ? CR : 0;
    else {
        for (; i + 4 <= n; i += 4) {
            a |= flag[s[i]];
            b |= flag[s[i + 1]];
            c |= flag[s[i + 2]];
            d |= flag[s[i + 3]];
        }
        for (; i < n; i++)
            a |= flag[s[i]];
    }
    unsigned int seen = a | b | c | d;
    int found = (int)(seen & ~CR);
    if (seen & CR) { /* a CR not ending a line moves back; a loop without a table vectorises */
        unsigned char bare = s[n - 1] == '\r';
        for (i = 0; i + 1 < n; i++)
            bare |= (s[i] == '\r') & (s[i + 1] != '\n');
        if (bare)
            found |= MOVES;
    }
    PyBuffer_Release(&data);
    return PyLong_FromLong(found);
}

static PyMethodDef methods[] = {
    {"screen_flags", screen_flags, METH_VARARGS,
     "screen_flags(data) -> int\n\n"
     "Bits: 1 a control character no terminal draws, 2 an escape, 4 a byte that is not ASCII,\n"
     "8 a move back or across the line (backspace, tab, vertical tab, form feed, a lone CR)."},
    {"digit_run", digit_run, METH_VARARGS,
     "digit_run(data, count) -> bool\n\n"
     "Whether `data` may hold a card number's `count` digits: in a row, consecutive ones at most\n"
     "one space or dash apart, either with a separator or between word boundaries."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "bastion._digits", "The masker's fast check for card-number-like digit runs.", -1, methods,
};

PyMODINIT_FUNC
PyInit__digits(void)
{
    for (int c = 0; c < 256; c++)
        word[c] = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    for (int c = '0'; c <= '9'; c++)
        kind[c] = DIGIT;
    kind[' '] = kind['-'] = SEPARATOR;
    for (int c = 0; c < 0x20; c++)
        flag[c] = UNDRAWN;
    flag[0x7f] = UNDRAWN;
    flag['\n'] = 0;
    flag[0x1b] = ESCAPE;
    flag['\b'] = flag['\t'] = flag['\v'] = flag['\f'] = MOVES;
    flag['\r'] = CR;
    for (int c = 0x80; c < 0x100; c++)
        flag[c] = NON_ASCII;
    return PyModule_Create(&module);
}
