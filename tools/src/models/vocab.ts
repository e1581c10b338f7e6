// SentencePiece-style (llama "SPM") vocabulary for generated models.
// Layout (see FACTS): 0 <unk>, 1 <s>, 2 </s>, 3 <|im_start|>, 4 <|im_end|>, 256 byte tokens,
// then normal pieces. llama.cpp's SPM tokenizer merges adjacent symbols only when the merged
// text is itself a piece, so every multi-character piece has all its prefixes in the vocabulary
// and longer pieces score higher: a listed word then tokenizes as one piece.

export const SPACE_MARKER = '\u2581';

export const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export const SPECIAL_TOKENS = {
  unk: { id: 0, text: '<unk>' },
  bos: { id: 1, text: '<s>' },
  eos: { id: 2, text: '</s>' },
  imStart: { id: 3, text: '<|im_start|>' },
  imEnd: { id: 4, text: '<|im_end|>' },
} as const;

export const FIRST_BYTE_TOKEN = 5;
export const FIRST_PIECE_TOKEN = FIRST_BYTE_TOKEN + 256;

/** ChatML, as used by Qwen and others; node-llama-cpp recognises it and picks its ChatML wrapper. */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

// Common English words (lower case; frequent ones also capitalised below). Each becomes "▁word".
const WORDS = `
the of and to a in is it you that he was for on are with as i his they be at one have this from or had by
not word but what some we can out other were all there when up use your how said an each she which do their
time if will way about many then them write would like so these her long make thing see him two has look more
day could go come did number sound no most people my over know water than call first who may down side been
now find any new work part take get place made live where after back little only round man year came show every
good me give our under name very through just form sentence great think say help low line differ turn cause much
mean before move right boy old too same tell does set three want air well also play small end put home read hand
port large spell add even land here must big high such follow act why ask men change went light kind off need
house picture try us again animal point mother world near build self earth father head stand own page should
country found answer school grow study still learn plant cover food sun four between state keep eye never last
let thought city tree cross farm hard start might story saw far sea draw left late run while press close night
real life few north open seem together next white children begin got walk example ease paper group always music
those both mark often letter until mile river car feet care second book carry took science eat room friend began
idea fish mountain stop once base hear horse cut sure watch color face wood main enough plain girl usual young
ready above ever red list though feel talk bird soon body dog family direct pose leave song measure door product
black short numeral class wind question happen complete ship area half rock order fire south problem piece told
knew pass since top whole king space heard best hour better true during hundred five remember step early hold
west ground interest reach fast verb sing listen six table travel less morning ten simple several toward war lay
against pattern slow center love person money serve appear road map rain rule govern pull cold notice voice unit
power town fine certain fly fall lead cry dark machine note wait plan figure star box noun field rest correct able
pound done beauty drive stood contain front teach week final gave green quick develop ocean warm free minute strong
special mind behind clear tail produce fact street inch multiply nothing course stay wheel full force blue object
decide surface deep moon island foot system busy test record boat common gold possible plane age dry wonder laugh
thousand ago ran check game shape yes hot miss brought heat snow tire bring distant fill east paint language among
model models device devices fleet server request requests response token tokens data value values text json key
status error errors ok true false null result results input output message messages user assistant system agent
network memory disk file files load loaded ready failed online offline health healthy latency queue job jobs task
tasks stream chat answer hello hi thanks please sorry weather today tomorrow yesterday name age city price count
total list item items id type types string number boolean object array field fields schema format date time level
low medium high small large tiny fast slow local cloud edge box boxes node nodes run running start stop update
version config service services report send receive connect connected ping pong info warn debug trace
`;

const CAPITALISED = `the a i it this that we you he she they there what when where why how yes no hello hi
thanks please ok sure here today my our your in on for and but if so is are was`;

// Word pieces that continue a word (no space marker).
const SUFFIXES = `s es ed ing er ers est ly tion tions sion ment ments ness able ible al ful less ous ive ize ise ity
en ence ance ant ent ist ism ic ical y ies ied ier iest ish ary ory age ure th st nd rd n't 're 've 'll 's 'm 'd`;

// JSON and punctuation pieces that grammar-constrained output uses often.
const SYMBOL_PIECES = [
  '{"', '"}', '":', '",', '","', '":"', '": "', '"]', '["', '[]', '{}', '},', '}]', '},{', '],', '")',
  '..', '...', '!!', '?!', '--', '->', '=>', '==', '!=', '<=', '>=', '::', '//', '/*', '*/', '**', '##',
  '.\n', '\n', '\n\n', '  ', '    ',
];

export interface VocabularyToken {
  text: string;
  score: number;
  type: number;
}

/**
 * What a normal piece is, used to shape the random output distribution towards readable text:
 * `word` starts with the space marker, `continuation` continues a word, `symbol` has no letters or
 * digits, `prefix` was only added so that longer pieces can be merged.
 */
export type PieceKind = 'word' | 'continuation' | 'symbol' | 'prefix';

export interface Vocabulary {
  tokens: VocabularyToken[];
  /** Kind of every normal piece by token id (control and byte tokens are absent). */
  pieceKinds: Map<number, PieceKind>;
}

function words(list: string): string[] {
  return list.split(/\s+/).filter((w) => w.length > 0);
}

function capitalise(word: string): string {
  return word.charAt(0).toUpperCase() + word.slice(1);
}

/** Builds the vocabulary. Pure and deterministic: the order depends only on the lists above. */
export function buildVocabulary(): Vocabulary {
  const tokens: VocabularyToken[] = [
    { text: SPECIAL_TOKENS.unk.text, score: 0, type: TokenType.UNKNOWN },
    { text: SPECIAL_TOKENS.bos.text, score: 0, type: TokenType.CONTROL },
    { text: SPECIAL_TOKENS.eos.text, score: 0, type: TokenType.CONTROL },
    { text: SPECIAL_TOKENS.imStart.text, score: 0, type: TokenType.CONTROL },
    { text: SPECIAL_TOKENS.imEnd.text, score: 0, type: TokenType.CONTROL },
  ];
  for (let b = 0; b < 256; b++) {
    tokens.push({ text: `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, score: 0, type: TokenType.BYTE });
  }

  const primary: string[] = [];
  // Printable ASCII, one character each (space is the SPM marker).
  for (let c = 0x21; c <= 0x7e; c++) primary.push(String.fromCharCode(c));
  primary.push(SPACE_MARKER);
  for (let d = 0; d <= 9; d++) primary.push(`${SPACE_MARKER}${d}`);
  for (let n = 10; n <= 100; n += 1) primary.push(`${SPACE_MARKER}${n}`);
  for (const n of [200, 500, 1000, 2024, 2025, 2026]) primary.push(`${SPACE_MARKER}${n}`);
  for (const w of words(WORDS)) primary.push(`${SPACE_MARKER}${w}`);
  for (const w of words(CAPITALISED)) primary.push(`${SPACE_MARKER}${capitalise(w)}`);
  for (const w of words(CAPITALISED)) primary.push(capitalise(w));
  for (const w of words(WORDS)) primary.push(w);
  for (const s of words(SUFFIXES)) primary.push(s);
  for (const p of ['.', ',', '!', '?', ':', ';', '"', "'", '(', ')', '-', '{', '}', '[', ']', '=', '+', '*', '/', '#', '@', '&', '$', '%']) {
    primary.push(`${SPACE_MARKER}${p}`);
  }
  primary.push(...SYMBOL_PIECES.map((p) => p.replaceAll(' ', SPACE_MARKER)));

  const index = new Map<string, number>();
  const pieceKinds = new Map<number, PieceKind>();
  const add = (text: string): number => {
    const existing = index.get(text);
    if (existing !== undefined) return existing;
    const id = tokens.length;
    // Longer pieces merge first in llama.cpp's SPM tokenizer (highest score wins, ties leftmost).
    tokens.push({ text, score: [...text].length, type: TokenType.NORMAL });
    index.set(text, id);
    pieceKinds.set(id, 'prefix');
    return id;
  };
  for (const piece of primary) {
    const chars = [...piece];
    for (let i = 1; i < chars.length; i++) add(chars.slice(0, i).join(''));
    const id = add(piece);
    const kind: PieceKind = !/[\p{L}\p{N}]/u.test(piece) ? 'symbol' : piece.startsWith(SPACE_MARKER) ? 'word' : 'continuation';
    pieceKinds.set(id, kind);
  }
  return { tokens, pieceKinds };
}
