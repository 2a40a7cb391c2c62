// Asset upload (XHR, for upload progress) and mixdown download for the session view.

import { parseError, statusMessage } from './api';

export interface UploadedAsset {
  assetId: string;
  name: string;
  duration: number;
}

/** Words a musician understands for an upload the server refused. */
export function uploadErrorText(status: number, bodyText: string): string {
  const err = parseError(status, bodyText);
  switch (err.code) {
    case 'upload_too_large':
      return `That file is too big to upload. ${err.message}`.trim();
    case 'unsupported_media':
      return `That doesn't look like an audio file (try WAV, FLAC, MP3, Ogg or M4A). ${err.message}`.trim();
    case 'corrupt_audio':
      return `That audio file could not be read: it may be empty or damaged. ${err.message}`.trim();
    case 'too_long':
      return `That recording is too long to upload. ${err.message}`.trim();
    default:
      return err.message || statusMessage(status);
  }
}

export function uploadAsset(
  sessionId: string,
  token: string,
  file: File,
  onProgress: (fraction: number) => void,
): Promise<UploadedAsset> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/api/sessions/${encodeURIComponent(sessionId)}/assets`);
    xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable && e.total > 0) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener('load', () => {
      if (xhr.status < 200 || xhr.status >= 300) {
        reject(new Error(uploadErrorText(xhr.status, xhr.responseText)));
        return;
      }
      try {
        const body = JSON.parse(xhr.responseText) as { asset_id?: unknown; name?: unknown; duration?: unknown };
        if (typeof body.asset_id !== 'string') throw new Error('no asset id');
        resolve({
          assetId: body.asset_id,
          name: typeof body.name === 'string' && body.name ? body.name : file.name,
          duration: typeof body.duration === 'number' ? body.duration : 0,
        });
      } catch {
        reject(new Error('The server accepted the file but sent an answer that could not be read.'));
      }
    });
    xhr.addEventListener('error', () => reject(new Error('The upload was interrupted. Check your connection and try again.')));
    xhr.addEventListener('abort', () => reject(new Error('The upload was cancelled.')));
    const form = new FormData();
    form.append('file', file, file.name);
    xhr.send(form);
  });
}

/** File name from a Content-Disposition header, or a fallback. */
export function dispositionName(header: string | null, fallback: string): string {
  if (!header) return fallback;
  const star = /filename\*=(?:UTF-8'')?([^;]+)/i.exec(header);
  if (star?.[1]) {
    try {
      return decodeURIComponent(star[1].trim().replace(/^"|"$/g, ''));
    } catch {
      // fall through
    }
  }
  const plain = /filename="?([^";]+)"?/i.exec(header);
  return plain?.[1]?.trim() || fallback;
}
